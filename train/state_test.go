package train

import (
	"bytes"
	"encoding/binary"
	"errors"
	"slices"
	"testing"
)

func trained(t testing.TB, cfg Config, steps int) *Trainer {
	t.Helper()
	tr := mustTrainer(t, cfg)
	for i := 0; i < steps; i++ {
		if _, err := tr.TrainStep(16); err != nil {
			t.Fatal(err)
		}
	}
	return tr
}

func TestStateRoundTrip(t *testing.T) {
	cfg := LocalConfig()
	a := trained(t, cfg, 10)
	state := a.MarshalState()
	b := mustTrainer(t, cfg)
	if err := b.UnmarshalState(state); err != nil {
		t.Fatalf("UnmarshalState = %v", err)
	}
	if b.Step() != 10 || b.ParamHash() != a.ParamHash() || !slices.Equal(b.opt.State(), a.opt.State()) {
		t.Fatalf("restored step %d hash %.12s, want step 10 hash %.12s and equal optimizer state",
			b.Step(), b.ParamHash(), a.ParamHash())
	}
	if !bytes.Equal(b.MarshalState(), state) {
		t.Error("MarshalState after UnmarshalState differs")
	}
	// Both continue identically: the optimizer state came along.
	if !continueAlike(t, a, b, 5, 16) {
		t.Error("original and restored trainers diverge after 5 more steps")
	}
	info, err := ReadStateInfo(state)
	if err != nil {
		t.Fatal(err)
	}
	want := StateInfo{Step: 10, Fingerprint: cfg.Fingerprint(), Params: cfg.NumParams(), OptState: cfg.NumParams()}
	if info != want {
		t.Errorf("ReadStateInfo = %+v, want %+v", info, want)
	}
}

// continueAlike trains a and b for steps single-process steps of batch
// size batch and reports whether they end with equal parameter hashes.
func continueAlike(t testing.TB, a, b *Trainer, steps, batch int) bool {
	t.Helper()
	for range steps {
		for _, tr := range []*Trainer{a, b} {
			if _, err := tr.TrainStep(batch); err != nil {
				t.Fatal(err)
			}
		}
	}
	return a.ParamHash() == b.ParamHash()
}

func TestStateHeaderGolden(t *testing.T) {
	cfg := tinyConfig()
	state := trained(t, cfg, 3).MarshalState()
	n := cfg.NumParams()
	head := []byte{'R', 'M', 'T', 'S', 0, 1, 0, 0}
	if !bytes.Equal(state[:8], head) {
		t.Errorf("state starts % x, want % x", state[:8], head)
	}
	if got, want := state[40:56], binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(
		binary.BigEndian.AppendUint64(nil, 3), uint32(n)), uint32(n)); !bytes.Equal(got, want) {
		t.Errorf("step and counts % x, want % x", got, want)
	}
	if got, want := len(state), 56+8*n+4; got != want {
		t.Errorf("state is %d bytes, want %d", got, want)
	}
}

func TestStateRejects(t *testing.T) {
	cfg := LocalConfig()
	good := trained(t, cfg, 4).MarshalState()
	other := cfg
	other.Seed = 2
	mutate := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	tests := []struct {
		name  string
		state []byte
		cfg   Config
		want  error
	}{
		{"empty", nil, cfg, ErrState},
		{"truncated", good[:len(good)-1], cfg, ErrState},
		{"extended", append(append([]byte(nil), good...), 0), cfg, ErrState},
		{"bit flip", mutate(func(b []byte) []byte { b[100] ^= 1; return b }), cfg, ErrState},
		{"magic", mutate(func(b []byte) []byte { b[0] = 'X'; return b }), cfg, ErrState},
		{"version", mutate(func(b []byte) []byte { b[5] = 2; return b }), cfg, ErrState},
		{"flags", mutate(func(b []byte) []byte { b[7] = 2; return b }), cfg, ErrState},
		{"huge count", mutate(func(b []byte) []byte { b[48] = 0xff; return b }), cfg, ErrState},
		{"other config", good, other, ErrFingerprint},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := trained(t, tt.cfg, 1)
			before := tr.MarshalState()
			err := tr.UnmarshalState(tt.state)
			if !errors.Is(err, tt.want) {
				t.Fatalf("UnmarshalState = %v, want %v", err, tt.want)
			}
			if !bytes.Equal(tr.MarshalState(), before) {
				t.Error("a rejected state changed the trainer")
			}
		})
	}
}

// TestDeterministic checks that identical inputs give identical bytes.
func TestDeterministic(t *testing.T) {
	for _, cfg := range []Config{LocalConfig(), DefaultConfig()} {
		a, b := trained(t, cfg, 20), trained(t, cfg, 20)
		if !bytes.Equal(a.MarshalState(), b.MarshalState()) {
			t.Errorf("%d params: two runs of 20 steps give different state bytes", cfg.NumParams())
		}
		if a.ParamHash() != b.ParamHash() || len(a.ParamHash()) != 64 {
			t.Errorf("ParamHash %q vs %q, want equal 64 hex digits", a.ParamHash(), b.ParamHash())
		}
	}
}

func TestConfig(t *testing.T) {
	for _, c := range []Config{DefaultConfig(), LocalConfig(), tinyConfig()} {
		if err := c.Validate(); err != nil {
			t.Errorf("Validate(%+v) = %v", c, err)
		}
	}
	mutations := map[string]func(*Config){
		"seed":          func(c *Config) { c.Seed++ },
		"input dim":     func(c *Config) { c.InputDim++ },
		"hidden":        func(c *Config) { c.Hidden = []int{128, 65} },
		"classes":       func(c *Config) { c.Classes++ },
		"teacher":       func(c *Config) { c.TeacherHidden++ },
		"dataset":       func(c *Config) { c.DatasetSize++ },
		"learning rate": func(c *Config) { c.LR *= 2 },
		"momentum":      func(c *Config) { c.Momentum = 0.5 },
	}
	base := DefaultConfig().Fingerprint()
	for name, mut := range mutations {
		c := DefaultConfig()
		mut(&c)
		if c.Fingerprint() == base {
			t.Errorf("changing %s keeps the fingerprint", name)
		}
	}
	invalid := map[string]func(*Config){
		"no input":          func(c *Config) { c.InputDim = 0 },
		"one class":         func(c *Config) { c.Classes = 1 },
		"zero hidden":       func(c *Config) { c.Hidden = []int{0} },
		"no teacher":        func(c *Config) { c.TeacherHidden = 0 },
		"no data":           func(c *Config) { c.DatasetSize = 0 },
		"zero lr":           func(c *Config) { c.LR = 0 },
		"momentum one":      func(c *Config) { c.Momentum = 1 },
		"too many params":   func(c *Config) { c.Hidden = []int{maxDim, maxDim} },
		"too many layers":   func(c *Config) { c.Hidden = make([]int, maxLayers+1) },
		"negative momentum": func(c *Config) { c.Momentum = -0.1 },
	}
	for name, mut := range invalid {
		c := DefaultConfig()
		mut(&c)
		if err := c.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: Validate() = %v, want ErrConfig", name, err)
		}
	}
}

func FuzzUnmarshalState(f *testing.F) {
	cfg := tinyConfig()
	f.Add(trained(f, cfg, 2).MarshalState())
	f.Add([]byte("RMTS"))
	f.Fuzz(func(t *testing.T, b []byte) {
		tr := mustTrainer(t, cfg)
		if err := tr.UnmarshalState(b); err != nil {
			return
		}
		if !bytes.Equal(tr.MarshalState(), b) {
			t.Fatal("accepted state does not round-trip")
		}
	})
}
