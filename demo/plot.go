package demo

import (
	"fmt"
	"image/color"
	"io"
	"math"
	"sort"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// plotData is what loss.png shows: each node's shard loss per step, the
// global batch loss, and vertical marks (kill, rejoin).
type plotData struct {
	Title  string
	Steps  uint64
	Series []plotSeries
	Global plotSeries
	Marks  []plotMark
}

type plotSeries struct {
	Name   string
	Color  color.RGBA
	Points []plotPoint
}

type plotPoint struct {
	Step uint64
	Loss float32
}

type plotMark struct {
	Step  uint64
	Label string
	Color color.RGBA
}

var plotColors = []color.RGBA{
	{31, 119, 180, 255}, {255, 127, 14, 255}, {44, 160, 44, 255}, {148, 103, 189, 255},
	{140, 86, 75, 255}, {227, 119, 194, 255}, {127, 127, 127, 255}, {188, 189, 34, 255},
}

// plotData gathers the demo's points; d.mu must be held.
func (d *Demo) plotData(sum Summary) plotData {
	pd := plotData{
		Title:  fmt.Sprintf("ringmesh demo: %d nodes, batch %d", d.cfg.Nodes, d.cfg.Batch),
		Steps:  d.cfg.Steps,
		Global: plotSeries{Name: "batch loss", Color: color.RGBA{0, 0, 0, 255}},
	}
	for i, n := range d.nodes {
		pd.Series = append(pd.Series, plotSeries{Name: n.name + " shard", Color: plotColors[i%len(plotColors)]})
	}
	global := map[uint64]float32{}
	for _, p := range d.points {
		pd.Series[p.Node].Points = append(pd.Series[p.Node].Points, plotPoint{p.Step, p.Local})
		global[p.Step] = p.Loss
	}
	for s, l := range global {
		pd.Global.Points = append(pd.Global.Points, plotPoint{s, l})
	}
	for i := range pd.Series {
		sortPoints(pd.Series[i].Points)
	}
	sortPoints(pd.Global.Points)
	if k := sum.Kill; k != nil {
		pd.Marks = append(pd.Marks, plotMark{Step: k.Step, Label: "kill " + k.Node, Color: color.RGBA{214, 39, 40, 255}})
	}
	if r := sum.Restart; r != nil && r.Rejoined {
		pd.Marks = append(pd.Marks, plotMark{Step: r.RejoinStep, Label: "rejoin " + r.Node, Color: color.RGBA{0, 140, 0, 255}})
	}
	return pd
}

func sortPoints(ps []plotPoint) {
	sort.Slice(ps, func(i, j int) bool { return ps[i].Step < ps[j].Step })
}

// PlotWidth and PlotHeight are the size of loss.png.
const (
	PlotWidth, PlotHeight = 960, 540 // loss.png, in pixels
	plotDPI               = 96
)

// plotLoss draws pd as a PNG with gonum/plot: a line per node's shard
// loss, a thicker one for the global batch loss, and dashed vertical marks
// (kill, rejoin) labelled in the legend.
func plotLoss(w io.Writer, pd plotData) error {
	p := plot.New()
	p.Title.Text = pd.Title
	p.X.Label.Text = "step"
	p.Y.Label.Text = "loss"
	p.X.Min, p.X.Max = 0, float64(max(pd.Steps, 1))
	p.Y.Min = 0
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	maxLoss := 0.0
	// add draws a series as lines broken where steps are missing (a node
	// that was down draws nothing there).
	add := func(s plotSeries, width vg.Length) error {
		var segs []plotter.XYs
		var last uint64
		for _, pt := range s.Points {
			l := float64(pt.Loss)
			if math.IsNaN(l) || math.IsInf(l, 0) {
				continue
			}
			if len(segs) == 0 || pt.Step > last+1 {
				segs = append(segs, nil)
			}
			segs[len(segs)-1] = append(segs[len(segs)-1], plotter.XY{X: float64(pt.Step), Y: l})
			last = pt.Step
			maxLoss = max(maxLoss, l)
		}
		for i, xys := range segs {
			line, err := plotter.NewLine(xys)
			if err != nil {
				return err
			}
			line.Color, line.Width = s.Color, width
			p.Add(line)
			if i == 0 {
				p.Legend.Add(s.Name, line)
			}
		}
		return nil
	}
	for _, s := range pd.Series {
		if err := add(s, vg.Points(1)); err != nil {
			return err
		}
	}
	if err := add(pd.Global, vg.Points(2.5)); err != nil {
		return err
	}
	top := max(maxLoss*1.05, 1e-3)
	p.Y.Max = top
	for _, m := range pd.Marks {
		mark, err := plotter.NewLine(plotter.XYs{{X: float64(m.Step), Y: 0}, {X: float64(m.Step), Y: top}})
		if err != nil {
			return err
		}
		mark.Color, mark.Width, mark.Dashes = m.Color, vg.Points(1.5), []vg.Length{vg.Points(4), vg.Points(3)}
		p.Add(mark)
		p.Legend.Add(fmt.Sprintf("%s (step %d)", m.Label, m.Step), mark)
	}
	c := vgimg.NewWith(vgimg.UseWH(vg.Length(PlotWidth)*vg.Inch/plotDPI, vg.Length(PlotHeight)*vg.Inch/plotDPI), vgimg.UseDPI(plotDPI))
	p.Draw(draw.New(c))
	_, err := vgimg.PngCanvas{Canvas: c}.WriteTo(w)
	return err
}
