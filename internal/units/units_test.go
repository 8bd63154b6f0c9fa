package units

import "testing"

func TestParseFormat(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
	}{{"64MiB", 64 << 20}, {"1GiB", 1 << 30}, {"1.5GB", 1500000000}, {"1000", 1000}, {"512KiB", 512 << 10}, {"4 MiB", 4 << 20}} {
		got, err := Parse(c.in)
		if err != nil || got != c.want {
			t.Errorf("Parse(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "-1MiB", "lots", "1ZiB"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q): no error", bad)
		}
	}
	for _, n := range []int64{64 << 20, 1 << 30, 1536 << 10, 1000, 3} {
		if back, err := Parse(Format(n)); err != nil || back != n {
			t.Errorf("Parse(Format(%d) = %q) = %d, %v", n, Format(n), back, err)
		}
	}
}

func TestRate(t *testing.T) {
	for in, want := range map[uint64]string{0: "-", 125e6: "1 Gbit/s", 25e6: "200 Mbit/s", 118_750_000: "950 Mbit/s", 3_125_000_000: "25 Gbit/s"} {
		if got := Rate(in); got != want {
			t.Errorf("Rate(%d) = %q, want %q", in, got, want)
		}
	}
}

func TestFlagValues(t *testing.T) {
	var s Size
	if err := s.Set("4MiB"); err != nil || s != 4<<20 || s.String() != "4MiB" {
		t.Errorf("Size.Set(4MiB): %v, %d %q", err, s, s.String())
	}
	if err := s.Set("lots"); err == nil {
		t.Error("Size.Set(lots): no error")
	}
	var l Float32Sizes
	if err := l.Set("64MiB, 4KiB"); err != nil {
		t.Fatal(err)
	}
	if err := l.Set("1GiB"); err != nil || l.String() != "64MiB,4KiB,1GiB" {
		t.Errorf("Float32Sizes after two Sets: %v, %q", err, l.String())
	}
	for _, bad := range []string{"6", "0", "x"} {
		if err := new(Float32Sizes).Set(bad); err == nil {
			t.Errorf("Float32Sizes.Set(%q): no error", bad)
		}
	}
}
