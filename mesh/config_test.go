package mesh

import (
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/multiformats/go-multiaddr"
)

func TestConfigValidate(t *testing.T) {
	ok := func(c *Config) {}
	tests := []struct {
		name string
		mod  func(*Config)
		bad  string // substring of the error, "" for valid
	}{
		{"default", ok, ""},
		{"no data dir", func(c *Config) { c.DataDir = "" }, "data dir"},
		{"bad mesh name", func(c *Config) { c.Mesh = "a/b" }, "mesh name"},
		{"empty mesh name", func(c *Config) { c.Mesh = "" }, "mesh name"},
		{"no listen", func(c *Config) { c.Listen = nil }, "no listen"},
		{"bad listen", func(c *Config) { c.Listen = []string{"tcp/1"} }, "listen address"},
		{"join over udp without id", func(c *Config) { c.Join = []string{"/ip4/127.0.0.1/udp/1/quic-v1"} }, "join address"},
		{"suspect below 2 heartbeats", func(c *Config) { c.SuspectTimeout = c.HeartbeatInterval }, "suspect timeout"},
		{"dead not above probe", func(c *Config) { c.DeadTimeout = c.ProbeTimeout }, "dead timeout"},
		{"payload over cap", func(c *Config) { c.MaxPayload = maxPayloadCap + 1 }, "max payload"},
		{"message cannot hold payload", func(c *Config) { c.MaxMessageSize = 2048 }, "max message size"},
		{"peer memory too small", func(c *Config) { c.PeerMemory = 1 << 20 }, "peer memory"},
		{"zero heartbeat", func(c *Config) { c.HeartbeatInterval = 0 }, "heartbeat interval"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			c.DataDir = "/tmp/x"
			tt.mod(&c)
			err := c.Validate()
			switch {
			case tt.bad == "" && err != nil:
				t.Errorf("got %v, want nil", err)
			case tt.bad != "" && (!errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.bad)):
				t.Errorf("got %v, want ErrInvalidConfig mentioning %q", err, tt.bad)
			}
		})
	}
	l := LocalConfig()
	l.DataDir = "/tmp/x"
	if err := l.Validate(); err != nil {
		t.Errorf("LocalConfig: %v", err)
	}
}

func TestIdentityPersists(t *testing.T) {
	dir := t.TempDir()
	k1, err := loadOrCreateIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := loadOrCreateIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !k1.Equals(k2) {
		t.Error("second load returned a different key")
	}
	fi, err := os.Stat(filepath.Join(dir, identityFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("identity file mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}
	for want := uint64(1); want <= 3; want++ {
		if got, err := bumpIncarnation(dir); err != nil || got != want {
			t.Errorf("bump %d: got %d, %v", want, got, err)
		}
	}
}

func TestMemberJSON(t *testing.T) {
	id := fixedID(t, 3)
	m := Member{
		ID: id, State: Suspect, Incarnation: 4,
		Addrs:    []multiaddr.Multiaddr{multiaddr.StringCast("/ip4/127.0.0.1/tcp/4001")},
		Caps:     Capabilities{CPUs: 2, MemoryBytes: 1024, GPUs: []GPU{{Name: "RTX 4090", UUID: "GPU-x", MemoryBytes: 24, UtilizationPct: 7}}},
		LastSeen: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"` + id.String() + `","state":"suspect","incarnation":4,"addrs":["/ip4/127.0.0.1/tcp/4001"],` +
		`"gpus":[{"name":"RTX 4090","uuid":"GPU-x","memory_bytes":24,"utilization_pct":7}],"cpus":2,"memory_bytes":1024,` +
		`"last_seen":"2026-01-02T03:04:05Z"}`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
	b, _ = json.Marshal(Member{ID: id, State: Alive})
	if !strings.Contains(string(b), `"gpus":[]`) || !strings.Contains(string(b), `"addrs":[]`) {
		t.Errorf("CPU host JSON %s: want empty gpus and addrs lists", b)
	}
}

func TestSetPayload(t *testing.T) {
	a := startNode(t, localConfig(t.TempDir()), nil)
	if err := a.SetPayload(make([]byte, a.cfg.MaxPayload+1)); !errors.Is(err, ErrPayloadTooLarge) {
		t.Errorf("oversized payload: got %v, want ErrPayloadTooLarge", err)
	}
	cfg := localConfig(t.TempDir())
	cfg.Join = []string{a.joinAddr()}
	b := startNode(t, cfg, nil)
	if err := a.SetPayload([]byte("step=42")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b sees a's payload", func() (bool, string) {
		m, _ := b.View().Member(a.Self())
		return string(m.Payload) == "step=42", string(m.Payload)
	})
}

func TestListenAddrsPrivateDropsQUIC(t *testing.T) {
	in := []string{"/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1", "/ip4/0.0.0.0/tcp/4002/ws"}
	got, err := listenAddrs(in, true, slog.New(slog.DiscardHandler))
	if err != nil || len(got) != 1 || got[0].String() != in[0] {
		t.Errorf("private: got %v, %v; want only %s", got, err, in[0])
	}
	if got, err := listenAddrs(in, false, slog.New(slog.DiscardHandler)); err != nil || len(got) != 3 {
		t.Errorf("public: got %v, %v; want all 3", got, err)
	}
	if _, err := listenAddrs(in[1:2], true, slog.New(slog.DiscardHandler)); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("private QUIC only: got %v, want ErrInvalidConfig", err)
	}
}

func TestReadAllow(t *testing.T) {
	id := fixedID(t, 5)
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	os.WriteFile(good, []byte("# list\n\n  "+id.String()+"  # host a\n"), 0o600)
	allow, err := readAllow(good)
	if err != nil || len(allow) != 1 || !allow[id] {
		t.Errorf("got %v, %v; want {%s}", allow, err, id)
	}
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte(id.String()+"\nnot-a-peer-id\n"), 0o600)
	if _, err := readAllow(bad); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("bad line: got %v, want an error naming line 2", err)
	}
	g := &allowGater{allow: allow}
	if !g.InterceptSecured(0, id, nil) || g.InterceptSecured(0, fixedID(t, 6), nil) {
		t.Error("gater: want listed peer in, others out")
	}
}

func TestAdvertiseAddrs(t *testing.T) {
	lo, lan := multiaddr.StringCast("/ip4/127.0.0.1/tcp/1"), multiaddr.StringCast("/ip4/10.1.2.3/tcp/1")
	if got := advertiseAddrs([]multiaddr.Multiaddr{lo, lan}); len(got) != 1 || !got[0].Equal(lan) {
		t.Errorf("got %v, want only %v", got, lan)
	}
	if got := advertiseAddrs([]multiaddr.Multiaddr{lo}); len(got) != 1 || !got[0].Equal(lo) {
		t.Errorf("loopback only: got %v, want %v", got, lo)
	}
}

// TestParseJoinPlain: plain TCP addresses (IP or DNS) parse with no peer ID;
// other transports and extra components need one.
func TestParseJoinPlain(t *testing.T) {
	for _, s := range []string{"/ip4/10.0.0.1/tcp/4001", "/ip6/::1/tcp/4001", "/dns4/gpu1.lab/tcp/4001", "/dns/gpu1.lab/tcp/4001"} {
		ai, err := parseJoin(s)
		if err != nil || ai.ID != "" || len(ai.Addrs) != 1 || ai.Addrs[0].String() != s {
			t.Errorf("parseJoin(%s): %+v, %v; want a plain address with no ID", s, ai, err)
		}
	}
	for _, s := range []string{"/ip4/10.0.0.1/udp/4001/quic-v1", "/ip4/10.0.0.1/tcp/4001/ws", "/ip4/10.0.0.1"} {
		if _, err := parseJoin(s); err == nil {
			t.Errorf("parseJoin(%s): no error", s)
		}
	}
}
