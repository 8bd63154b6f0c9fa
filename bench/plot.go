package bench

import (
	"fmt"
	"image/color"
	"io"
	"sort"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// TrainPoint is one trainer's applied step, as `bench train --plot` draws
// it.
type TrainPoint struct {
	Member   int
	Step     uint64
	Share    float64
	StepTime float64 // seconds
}

var memberColors = []color.RGBA{
	{31, 119, 180, 255}, {255, 127, 14, 255}, {44, 160, 44, 255}, {214, 39, 40, 255},
	{148, 103, 189, 255}, {140, 86, 75, 255}, {227, 119, 194, 255}, {127, 127, 127, 255},
}

// PlotTrain draws a bench train run as a PNG (960x640): the members'
// shares of the global batch by step above, the mesh's step time (the
// slowest member's) below; names label the members, title the figure.
func PlotTrain(w io.Writer, title string, names []string, pts []TrainPoint) error {
	shares := plot.New()
	shares.Title.Text = title
	shares.Y.Label.Text = "share of the global batch"
	shares.Y.Min, shares.Y.Max = 0, 1
	shares.Add(plotter.NewGrid())
	shares.Legend.Top = true
	times := plot.New()
	times.X.Label.Text = "step"
	times.Y.Label.Text = "step time (s)"
	times.Y.Min = 0
	times.Add(plotter.NewGrid())

	by := make([]plotter.XYs, len(names))
	slowest := map[uint64]float64{}
	var last uint64
	for _, p := range pts {
		if p.Member < 0 || p.Member >= len(names) {
			return fmt.Errorf("bench: point of member %d, %d names", p.Member, len(names))
		}
		by[p.Member] = append(by[p.Member], plotter.XY{X: float64(p.Step), Y: p.Share})
		slowest[p.Step] = max(slowest[p.Step], p.StepTime)
		last = max(last, p.Step)
	}
	for i, xys := range by {
		if len(xys) == 0 {
			continue
		}
		sort.Slice(xys, func(a, b int) bool { return xys[a].X < xys[b].X })
		line, err := plotter.NewLine(xys)
		if err != nil {
			return err
		}
		line.Color, line.Width = memberColors[i%len(memberColors)], vg.Points(1.5)
		shares.Add(line)
		shares.Legend.Add(names[i], line)
	}
	var txy plotter.XYs
	for s, t := range slowest {
		txy = append(txy, plotter.XY{X: float64(s), Y: t})
	}
	sort.Slice(txy, func(a, b int) bool { return txy[a].X < txy[b].X })
	if len(txy) > 0 {
		line, err := plotter.NewLine(txy)
		if err != nil {
			return err
		}
		line.Width = vg.Points(1.5)
		times.Add(line)
	}
	for _, p := range []*plot.Plot{shares, times} {
		p.X.Min, p.X.Max = 0, float64(max(last, 1))
		p.X.Tick.Marker = plainTicks{}
	}
	const width, height, dpi = 960, 640, 96
	c := vgimg.NewWith(vgimg.UseWH(width*vg.Inch/dpi, height*vg.Inch/dpi), vgimg.UseDPI(dpi))
	dc := draw.New(c)
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadTop: vg.Points(4), PadBottom: vg.Points(4), PadLeft: vg.Points(4), PadRight: vg.Points(8), PadY: vg.Points(8)}
	canvases := plot.Align([][]*plot.Plot{{shares}, {times}}, tiles, dc)
	shares.Draw(canvases[0][0])
	times.Draw(canvases[1][0])
	_, err := vgimg.PngCanvas{Canvas: c}.WriteTo(w)
	return err
}

// plainTicks are gonum's default ticks labelled in %g (25, not 25.00).
type plainTicks struct{}

func (plainTicks) Ticks(min, max float64) []plot.Tick {
	ts := plot.DefaultTicks{}.Ticks(min, max)
	for i := range ts {
		if ts[i].Label != "" {
			ts[i].Label = strconv.FormatFloat(ts[i].Value, 'g', -1, 64)
		}
	}
	return ts
}
