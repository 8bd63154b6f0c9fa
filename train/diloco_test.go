package train

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"slices"
	"testing"
)

func mustDiLoCo(t testing.TB, cfg Config, outer Outer) *Trainer {
	t.Helper()
	tr, err := NewDiLoCo(cfg, outer)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// TestDiLoCoOneInnerStepIsDataParallel: with H = 1, outer lr 1 and no
// outer momentum, the outer step applies the weighted mean of the members'
// inner SGD steps, and since each member's inner velocity is linear in its
// gradients, that is the every-step data-parallel update: K members end
// where one every-step worker with the whole batch does (within float32
// rounding), and bit-identical to each other.
func TestDiLoCoOneInnerStepIsDataParallel(t *testing.T) {
	const k, b, steps = 3, 29, 40
	cfg := LocalConfig()
	ref := mustTrainer(t, cfg)
	members := make([]*Trainer, k)
	for r := range members {
		members[r] = mustDiLoCo(t, cfg, Outer{SyncEvery: 1, LR: 1, Momentum: 0})
	}
	avg := make([]float32, cfg.NumParams())
	sum := make([]float64, cfg.NumParams())
	for range steps {
		if _, err := ref.TrainStep(b); err != nil {
			t.Fatal(err)
		}
		clear(sum)
		for r, m := range members {
			mine := Shard(m.InnerBatch(0, b), r, k)
			m.InnerStep(mine)
			for i, g := range m.PseudoGrad() {
				sum[i] += float64(len(mine)) * float64(g)
			}
		}
		for i := range avg {
			avg[i] = float32(sum[i] / b)
		}
		for _, m := range members {
			if err := m.Apply(avg); err != nil {
				t.Fatal(err)
			}
		}
	}
	for r, m := range members {
		if m.ParamHash() != members[0].ParamHash() || m.Step() != steps {
			t.Errorf("member %d at step %d with hash %.12s, want step %d and member 0's %.12s",
				r, m.Step(), m.ParamHash(), steps, members[0].ParamHash())
		}
		if !slices.Equal(m.Params(), m.GlobalParams()) {
			t.Errorf("member %d: theta_local is not theta_global after the outer step", r)
		}
	}
	worst := 0.0
	for i, want := range ref.Params() {
		d := math.Abs(float64(members[0].GlobalParams()[i] - want))
		worst = max(worst, d)
		if d > 1e-4+1e-4*math.Abs(float64(want)) {
			t.Errorf("param %d: %v with DiLoCo H=1, %v every step", i, members[0].GlobalParams()[i], want)
		}
	}
	t.Logf("max |param difference| after %d steps: %.2g", steps, worst)
}

// TestDiLoCoTrainStep: one outer step of TrainStep is H inner steps on
// global batches k*H .. k*H+H-1, then the Nesterov step on the
// pseudo-gradient; theta_local restarts from theta_global.
func TestDiLoCoTrainStep(t *testing.T) {
	cfg, outer := LocalConfig(), Outer{SyncEvery: 3, LR: 0.7, Momentum: 0.9}
	a := mustDiLoCo(t, cfg, outer)
	b := mustDiLoCo(t, cfg, outer)
	ds := b.Data()
	for k := uint64(0); k < 4; k++ {
		if _, err := a.TrainStep(16); err != nil {
			t.Fatal(err)
		}
		global := slices.Clone(b.GlobalParams())
		for i := range 3 {
			batch := b.InnerBatch(i, 16)
			if !slices.Equal(batch, ds.GlobalBatch(3*k+uint64(i), 16)) {
				t.Fatalf("outer %d inner %d: InnerBatch is not global batch %d", k, i, 3*k+uint64(i))
			}
			b.InnerStep(batch)
		}
		if !slices.Equal(b.GlobalParams(), global) {
			t.Fatal("inner steps moved theta_global")
		}
		pg := slices.Clone(b.PseudoGrad())
		mom := slices.Clone(b.outer.opt.State())
		want := slices.Clone(global)
		nesterovFrom(t, mom, outer).Step(want, pg)
		if err := b.Apply(pg); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(b.GlobalParams(), want) || !slices.Equal(b.Params(), want) || b.Step() != k+1 {
			t.Fatalf("outer step %d: theta_global or theta_local is not the Nesterov step of the pseudo-gradient", k)
		}
	}
	if a.ParamHash() != b.ParamHash() {
		t.Error("TrainStep and the spelled-out schedule differ")
	}
	if _, ok := mustTrainer(t, cfg).Outer(); ok {
		t.Error("an every-step trainer reports an outer loop")
	}
	if o, ok := a.Outer(); !ok || o != outer {
		t.Errorf("Outer() = %+v, %v; want %+v", o, ok, outer)
	}
}

// nesterovFrom is a Nesterov optimizer starting from momentum mom.
func nesterovFrom(t *testing.T, mom []float32, outer Outer) *SGD {
	t.Helper()
	o := NewNesterov(len(mom), outer.LR, outer.Momentum)
	copy(o.State(), mom)
	return o
}

func TestDiLoCoRestart(t *testing.T) {
	tr := mustDiLoCo(t, LocalConfig(), DefaultOuter())
	tr.InnerStep(tr.InnerBatch(0, 16))
	if slices.Equal(tr.Params(), tr.GlobalParams()) || !slices.ContainsFunc(tr.opt.State(), func(v float32) bool { return v != 0 }) {
		t.Fatal("an inner step moved neither theta_local nor the inner velocity")
	}
	tr.Restart()
	if !slices.Equal(tr.Params(), tr.GlobalParams()) || slices.ContainsFunc(tr.opt.State(), func(v float32) bool { return v != 0 }) {
		t.Error("Restart left local progress or inner velocity")
	}
	plain := trained(t, LocalConfig(), 2)
	before := plain.MarshalState()
	plain.Restart()
	if !bytes.Equal(plain.MarshalState(), before) {
		t.Error("Restart changed an every-step trainer")
	}
}

func TestDiLoCoStateRoundTrip(t *testing.T) {
	cfg, outer := tinyConfig(), Outer{SyncEvery: 2, LR: 0.7, Momentum: 0.9}
	a := mustDiLoCo(t, cfg, outer)
	for range 3 {
		if _, err := a.TrainStep(8); err != nil {
			t.Fatal(err)
		}
	}
	a.InnerStep(a.InnerBatch(0, 8)) // local progress the state does not hold
	state := a.MarshalState()
	n := cfg.NumParams()
	if head := []byte{'R', 'M', 'T', 'S', 0, 1, 0, 1}; !bytes.Equal(state[:8], head) {
		t.Errorf("state starts % x, want % x (flag bit 0: DiLoCo)", state[:8], head)
	}
	if len(state) != 56+8*n+4 {
		t.Errorf("state is %d bytes, want %d", len(state), 56+8*n+4)
	}
	info, err := ReadStateInfo(state)
	if err != nil {
		t.Fatal(err)
	}
	if want := (StateInfo{Step: 3, Fingerprint: a.Fingerprint(), Params: n, OptState: n, DiLoCo: true}); info != want {
		t.Errorf("ReadStateInfo = %+v, want %+v", info, want)
	}
	if a.Fingerprint() == cfg.Fingerprint() {
		t.Error("a DiLoCo trainer's fingerprint is its Config's alone")
	}
	b := mustDiLoCo(t, cfg, outer)
	b.InnerStep(b.InnerBatch(0, 8))
	if err := b.UnmarshalState(state); err != nil {
		t.Fatal(err)
	}
	if b.Step() != 3 || b.ParamHash() != a.ParamHash() || !slices.Equal(b.outer.opt.State(), a.outer.opt.State()) {
		t.Fatal("restored step, theta_global or outer momentum differ")
	}
	if !slices.Equal(b.Params(), b.GlobalParams()) || slices.ContainsFunc(b.opt.State(), func(v float32) bool { return v != 0 }) {
		t.Error("a loaded DiLoCo trainer does not restart from theta_global with zero inner velocity")
	}
	if !bytes.Equal(b.MarshalState(), state) {
		t.Error("MarshalState after UnmarshalState differs")
	}
	a.Restart()
	if !continueAlike(t, a, b, 2, 8) {
		t.Error("original (restarted) and restored trainers diverge")
	}
}

// TestDiLoCoStateRejects: states of the other mode, or of another H or
// outer optimizer, are not loaded.
func TestDiLoCoStateRejects(t *testing.T) {
	cfg, outer := tinyConfig(), Outer{SyncEvery: 2, LR: 0.7, Momentum: 0.9}
	diloco := func(o Outer) []byte {
		tr := mustDiLoCo(t, cfg, o)
		if _, err := tr.TrainStep(8); err != nil {
			t.Fatal(err)
		}
		return tr.MarshalState()
	}
	otherH, otherLR := outer, outer
	otherH.SyncEvery, otherLR.LR = 3, 0.5
	tests := []struct {
		name  string
		tr    *Trainer
		state []byte
		want  error
	}{
		{"every-step state", mustDiLoCo(t, cfg, outer), trained(t, cfg, 1).MarshalState(), ErrFingerprint},
		{"into an every-step trainer", mustTrainer(t, cfg), diloco(outer), ErrFingerprint},
		{"other H", mustDiLoCo(t, cfg, outer), diloco(otherH), ErrFingerprint},
		{"other outer lr", mustDiLoCo(t, cfg, outer), diloco(otherLR), ErrFingerprint},
		{"reserved flag", mustDiLoCo(t, cfg, outer), withCRC(func(b []byte) { b[7] |= 2 }, diloco(outer)), ErrState},
		{"flag cleared", mustDiLoCo(t, cfg, outer), withCRC(func(b []byte) { b[7] = 0 }, diloco(outer)), ErrState},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := tt.tr.MarshalState()
			if err := tt.tr.UnmarshalState(tt.state); !errors.Is(err, tt.want) {
				t.Fatalf("UnmarshalState = %v, want %v", err, tt.want)
			}
			if !bytes.Equal(tt.tr.MarshalState(), before) {
				t.Error("a rejected state changed the trainer")
			}
		})
	}
}

func TestDiLoCoMethodsPanicOnEveryStep(t *testing.T) {
	tr := mustTrainer(t, tinyConfig())
	for name, f := range map[string]func(){
		"InnerBatch": func() { tr.InnerBatch(0, 4) },
		"InnerStep":  func() { tr.InnerStep([]int{1}) },
		"PseudoGrad": func() { tr.PseudoGrad() },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s of an every-step trainer did not panic", name)
				}
			}()
			f()
		}()
	}
}

// withCRC applies f to a copy of state and fixes its checksum.
func withCRC(f func([]byte), state []byte) []byte {
	b := slices.Clone(state)
	f(b)
	end := len(b) - stateTrailer
	return binary.BigEndian.AppendUint32(b[:end], crc32.Checksum(b[:end], castagnoli))
}
