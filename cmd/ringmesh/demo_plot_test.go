package main

import (
	"bytes"
	"image/color"
	"image/png"
	"testing"
)

func TestPlotLoss(t *testing.T) {
	red := color.RGBA{200, 0, 0, 255}
	pd := plotData{Title: "test, 2 nodes", Steps: 50,
		Global: plotSeries{Name: "batch loss", Color: color.RGBA{0, 0, 0, 255}},
		Marks:  []plotMark{{Step: 20, Label: "kill node1", Color: color.RGBA{0, 0, 200, 255}}}}
	pd.Series = append(pd.Series, plotSeries{Name: "node0", Color: red})
	for s := uint64(0); s < 50; s++ {
		pd.Series[0].Points = append(pd.Series[0].Points, plotPoint{s, 2.3 / float32(1+s)})
		pd.Global.Points = append(pd.Global.Points, plotPoint{s, 2 / float32(1+s)})
	}
	var buf bytes.Buffer
	if err := plotLoss(&buf, pd); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&buf)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	if b := img.Bounds(); b.Dx() != plotW || b.Dy() != plotH {
		t.Fatalf("image %v, want %dx%d", b, plotW, plotH)
	}
	// The series' colour appears (its line and legend box).
	n := 0
	for y := 0; y < plotH; y++ {
		for x := 0; x < plotW; x++ {
			if r, g, b, _ := img.At(x, y).RGBA(); r>>8 == 200 && g == 0 && b == 0 {
				n++
			}
		}
	}
	if n < 100 {
		t.Errorf("%d pixels of the series colour, want a line and a legend box (>= 100)", n)
	}
}

func TestFontGlyphs(t *testing.T) {
	for r, g := range font3x5 {
		if len(g) != glyphW*glyphH {
			t.Errorf("glyph %q has %d pixels, want %d", r, len(g), glyphW*glyphH)
		}
	}
	for _, r := range "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ.-:/(),= " {
		if _, ok := font3x5[r]; !ok {
			t.Errorf("no glyph for %q", r)
		}
	}
}

func TestNiceCeil(t *testing.T) {
	for _, tc := range []struct{ in, want float64 }{{2.52, 3}, {0.05, 0.1}, {1, 1}, {11, 15}, {0.73, 0.8}} {
		if got := niceCeil(tc.in); got != tc.want {
			t.Errorf("niceCeil(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
