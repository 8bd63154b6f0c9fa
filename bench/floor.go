package bench

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/davidlazar/go-crypto/salsa20"
)

// Floor is this machine's cost of the work an all-reduce cannot avoid, each
// measured on one core: the ciphers (TLS's AES-GCM on every byte; with a
// mesh secret, libp2p's private network XSalsa20 on top), moving bytes
// through loopback TCP (both ends' CPU), and adding float32s.
type Floor struct {
	GCMBytesPerCPUS    float64 `json:"aes_gcm_Bps"`        // seal or open
	XSalsaBytesPerCPUS float64 `json:"xsalsa20_Bps"`       // one direction
	TCPCPUSPerByte     float64 `json:"tcp_cpu_s_per_byte"` // sender + receiver
	AddBytesPerCPUS    float64 `json:"reduce_Bps"`         // float32 bytes added
}

// Cipher is what a round's bytes are encrypted with.
type Cipher int

const (
	CipherNone      Cipher = iota // trusted network: plaintext lanes
	CipherTLS                     // direct lanes (TLS), or streams of an open mesh
	CipherTLSXSalsa               // streams of a private mesh: TLS under libp2p's pnet
)

// RoundCPU is the floor, in CPU-seconds summed over the n members, of one
// ring all-reduce of a buffer of size bytes of float32 that takes wire
// bytes on the wire (size, or size/2 for 16-bit wire types): each member
// sends and receives W = 2*wire*(n-1)/n bytes, seals what it sends and
// opens what it receives (per c: AES-GCM, and XSalsa20 on top for a
// private mesh's streams, or nothing), carries them over TCP, and adds
// size*(n-1)/n bytes of float32. Conversions, framing, the muxer and
// scheduling are not in it: they are what efficiency = floor / actual
// measures.
func (f Floor) RoundCPU(n int, wire, size int64, c Cipher) float64 {
	if n < 2 {
		return 0
	}
	w := 2 * float64(wire) * float64(n-1) / float64(n)
	per := w*f.TCPCPUSPerByte + float64(size)*float64(n-1)/float64(n)/f.AddBytesPerCPUS
	if c >= CipherTLS {
		per += 2 * w / f.GCMBytesPerCPUS
	}
	if c == CipherTLSXSalsa {
		per += 2 * w / f.XSalsaBytesPerCPUS
	}
	return float64(n) * per
}

// MeasureFloor measures each part for about d.
func MeasureFloor(d time.Duration) (Floor, error) {
	var f Floor
	var err error
	if f.GCMBytesPerCPUS, err = rate(d, gcmSeal()); err != nil {
		return f, err
	}
	if f.XSalsaBytesPerCPUS, err = rate(d, xsalsa()); err != nil {
		return f, err
	}
	if f.AddBytesPerCPUS, err = rate(d, addFloats()); err != nil {
		return f, err
	}
	if f.TCPCPUSPerByte, err = tcpCost(d); err != nil {
		return f, err
	}
	return f, nil
}

// cpuNow is this process's user+system CPU time.
func cpuNow() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, err
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// rate runs step (which processes the bytes it returns) for about d and
// returns bytes per CPU-second.
func rate(d time.Duration, step func() int) (float64, error) {
	c0, err := cpuNow()
	if err != nil {
		return 0, err
	}
	total := 0
	for t0 := time.Now(); time.Since(t0) < d; {
		total += step()
	}
	c1, err := cpuNow()
	if err != nil {
		return 0, err
	}
	return float64(total) / max((c1-c0).Seconds(), 1e-6), nil
}

// record is a full TLS record's payload.
const record = 16 << 10

func gcmSeal() func() int {
	key := make([]byte, 16)
	rand.Read(key)
	blk, _ := aes.NewCipher(key)
	aead, _ := cipher.NewGCM(blk)
	nonce := make([]byte, aead.NonceSize())
	src := make([]byte, record)
	dst := make([]byte, 0, record+aead.Overhead())
	return func() int {
		for range 64 {
			dst = aead.Seal(dst[:0], nonce, src, nil)
		}
		return 64 * record
	}
}

func xsalsa() func() int {
	var key [32]byte
	rand.Read(key[:])
	nonce := make([]byte, 24)
	st := salsa20.New(&key, nonce) // the stream cipher libp2p's pnet runs
	buf := make([]byte, 1<<20)
	return func() int {
		st.XORKeyStream(buf, buf)
		return len(buf)
	}
}

func addFloats() func() int {
	a, b := make([]float32, 1<<18), make([]float32, 1<<18)
	for i := range b {
		b[i] = float32(i)
	}
	return func() int {
		for i := range a {
			a[i] += b[i]
		}
		return 4 * len(a)
	}
}

// tcpCost sends bytes over a loopback TCP connection in this process for
// about d and returns both ends' CPU-seconds per byte.
func tcpCost(d time.Duration) (float64, error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	got := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- 0
			return
		}
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		got <- n
	}()
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		return 0, err
	}
	buf := make([]byte, 1<<20)
	c0, err := cpuNow()
	if err != nil {
		c.Close()
		return 0, err
	}
	for t0 := time.Now(); time.Since(t0) < d; {
		if _, err := c.Write(buf); err != nil {
			c.Close()
			return 0, err
		}
	}
	c.Close()
	n := <-got
	c1, err := cpuNow()
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, fmt.Errorf("loopback TCP: nothing received")
	}
	return (c1 - c0).Seconds() / float64(n), nil
}
