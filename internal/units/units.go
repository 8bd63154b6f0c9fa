// Package units parses and formats byte sizes for flags and benchmark
// lines: 64MiB, 1GiB, 1.5GB, 1000 in; the exact, space-free largest binary
// unit out (64MiB, 1536KiB), so what Format writes Parse reads back.
package units

import (
	"fmt"
	"math"
	"strings"

	"github.com/dustin/go-humanize"
)

// Parse parses sizes like 64MiB, 1GiB, 1.5GB, 1000 (bytes), with
// dustin/go-humanize.
func Parse(s string) (int64, error) {
	v, err := humanize.ParseBytes(s)
	if err != nil || v > math.MaxInt64 {
		return 0, fmt.Errorf("bad size %q (use e.g. 64MiB)", s)
	}
	return int64(v), nil
}

// Format writes n in the largest binary unit that divides it, without
// a space (64MiB, 1536KiB): the form bench lines and flag defaults use,
// which Parse reads back exactly.
func Format(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

// Rate writes a link rate given in bytes per second as bits per second
// with an SI prefix (950 Mbit/s, 25 Gbit/s), the way links are sold; "-"
// for 0 (unknown).
func Rate(bytesPerSec uint64) string {
	if bytesPerSec == 0 {
		return "-"
	}
	v, unit := humanize.ComputeSI(float64(bytesPerSec) * 8)
	return humanize.FtoaWithDigits(v, 3) + " " + unit + "bit/s"
}

// Size is a byte count flag value (spf13/pflag's Value) that takes
// 64MiB-style sizes.
type Size int64

func (s *Size) String() string { return Format(int64(*s)) }

// Type names the flag's value in --help.
func (s *Size) Type() string { return "size" }

// Set parses v with Parse.
func (s *Size) Set(v string) error {
	n, err := Parse(v)
	*s = Size(n)
	return err
}

// Float32Sizes is a repeatable, comma-separated flag value of buffer sizes
// (64MiB,1GiB), each a positive multiple of 4 bytes (float32 buffers).
type Float32Sizes []int64

func (s *Float32Sizes) String() string {
	parts := make([]string, len(*s))
	for i, v := range *s {
		parts[i] = Format(v)
	}
	return strings.Join(parts, ",")
}

// Type names the flag's value in --help.
func (s *Float32Sizes) Type() string { return "sizes" }

// Set appends the sizes of the comma-separated list v.
func (s *Float32Sizes) Set(v string) error {
	for _, part := range strings.Split(v, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		n, err := Parse(part)
		if err != nil {
			return err
		}
		if n < 4 || n%4 != 0 {
			return fmt.Errorf("size %q: must be a positive multiple of 4 bytes (float32 buffers)", part)
		}
		*s = append(*s, n)
	}
	return nil
}
