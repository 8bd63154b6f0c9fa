package main

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math"
	"sort"
	"strings"
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
func (d *demo) plotData(sum demoSummary) plotData {
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

// Layout of loss.png, in pixels.
const (
	plotW, plotH             = 960, 540
	plotLeft, plotRight      = 70, 20
	plotTop, plotBottom      = 40, 50
	fontScale                = 2
	glyphW, glyphH, glyphGap = 3, 5, 1
)

// canvas maps (step, loss) into the plot area of an RGBA image.
type canvas struct {
	img        *image.RGBA
	maxX, maxY float64
}

func (c *canvas) px(step float64, loss float64) (int, int) {
	w, h := plotW-plotLeft-plotRight, plotH-plotTop-plotBottom
	x := plotLeft + int(math.Round(step/c.maxX*float64(w)))
	y := plotTop + h - int(math.Round(loss/c.maxY*float64(h)))
	return x, y
}

// plotLoss draws pd as a PNG.
func plotLoss(w io.Writer, pd plotData) error {
	img := image.NewRGBA(image.Rect(0, 0, plotW, plotH))
	fill(img, img.Bounds(), color.RGBA{255, 255, 255, 255})
	maxLoss := 0.0
	for _, s := range append(pd.Series, pd.Global) {
		for _, p := range s.Points {
			if !math.IsNaN(float64(p.Loss)) && !math.IsInf(float64(p.Loss), 0) {
				maxLoss = max(maxLoss, float64(p.Loss))
			}
		}
	}
	c := &canvas{img: img, maxX: float64(max(pd.Steps, 1)), maxY: niceCeil(maxLoss)}
	c.axes()
	for _, m := range pd.Marks {
		x, _ := c.px(float64(m.Step), 0)
		for y := plotTop; y < plotH-plotBottom; y++ {
			if (y/6)%2 == 0 {
				img.SetRGBA(x, y, m.Color)
			}
		}
		drawText(img, x+4, plotH-plotBottom-16-14*indexOf(pd.Marks, m), m.Label, m.Color)
	}
	for _, s := range pd.Series {
		c.line(s, 1)
	}
	c.line(pd.Global, 2)
	// Legend, top right.
	lx, ly := plotW-plotRight-170, plotTop+6
	for _, s := range append(pd.Series, pd.Global) {
		fill(img, image.Rect(lx, ly+2, lx+14, ly+8), s.Color)
		drawText(img, lx+20, ly, s.Name, color.RGBA{0, 0, 0, 255})
		ly += 14
	}
	drawText(img, plotLeft, 12, pd.Title, color.RGBA{0, 0, 0, 255})
	return png.Encode(w, img)
}

func indexOf(ms []plotMark, m plotMark) int {
	for i := range ms {
		if ms[i] == m {
			return i
		}
	}
	return 0
}

// axes draws the frame, ticks and labels.
func (c *canvas) axes() {
	black, grid := color.RGBA{0, 0, 0, 255}, color.RGBA{225, 225, 225, 255}
	x0, y0 := c.px(0, 0)
	x1, y1 := c.px(c.maxX, c.maxY)
	for i := 0; i <= 5; i++ {
		loss := c.maxY * float64(i) / 5
		_, y := c.px(0, loss)
		hline(c.img, x0, x1, y, grid)
		label := trimFloat(loss)
		drawText(c.img, x0-8-textWidth(label), y-glyphH*fontScale/2, label, black)
	}
	for i := 0; i <= 6; i++ {
		step := math.Round(c.maxX * float64(i) / 6)
		x, _ := c.px(step, 0)
		vline(c.img, x, y0, y0+5, black)
		label := fmt.Sprint(int64(step))
		drawText(c.img, x-textWidth(label)/2, y0+10, label, black)
	}
	hline(c.img, x0, x1, y0, black)
	vline(c.img, x0, y1, y0, black)
	drawText(c.img, (x0+x1)/2-textWidth("step")/2, y0+30, "step", black)
	drawText(c.img, 8, y1-22, "loss", black)
}

// line draws a series, broken where steps are missing.
func (c *canvas) line(s plotSeries, width int) {
	for i := 1; i < len(s.Points); i++ {
		a, b := s.Points[i-1], s.Points[i]
		if b.Step != a.Step+1 {
			continue
		}
		xa, ya := c.px(float64(a.Step), clampLoss(a.Loss, c.maxY))
		xb, yb := c.px(float64(b.Step), clampLoss(b.Loss, c.maxY))
		for d := 0; d < width; d++ {
			segment(c.img, xa, ya+d, xb, yb+d, s.Color)
		}
	}
}

func clampLoss(l float32, maxY float64) float64 {
	v := float64(l)
	if math.IsNaN(v) || v > maxY {
		return maxY
	}
	return max(v, 0)
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten (at least 0.1).
func niceCeil(v float64) float64 {
	if !(v > 0.1) {
		return 0.1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func trimFloat(v float64) string {
	s := fmt.Sprintf("%.2f", v)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	if s == "" {
		return "0"
	}
	return s
}

func fill(img *image.RGBA, r image.Rectangle, col color.RGBA) {
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			img.SetRGBA(x, y, col)
		}
	}
}

func hline(img *image.RGBA, x0, x1, y int, col color.RGBA) {
	for x := x0; x <= x1; x++ {
		img.SetRGBA(x, y, col)
	}
}

func vline(img *image.RGBA, x, y0, y1 int, col color.RGBA) {
	for y := min(y0, y1); y <= max(y0, y1); y++ {
		img.SetRGBA(x, y, col)
	}
}

// segment draws a line with Bresenham's algorithm.
func segment(img *image.RGBA, x0, y0, x1, y1 int, col color.RGBA) {
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := sign(x1-x0), sign(y1-y0)
	e := dx + dy
	for {
		img.SetRGBA(x0, y0, col)
		if x0 == x1 && y0 == y1 {
			return
		}
		if e2 := 2 * e; e2 >= dy {
			e += dy
			x0 += sx
		} else {
			e += dx
			y0 += sy
		}
	}
}

func abs(v int) int { return max(v, -v) }

func sign(v int) int {
	switch {
	case v > 0:
		return 1
	case v < 0:
		return -1
	}
	return 0
}

func textWidth(s string) int { return len(s) * (glyphW + glyphGap) * fontScale }

// drawText writes s in the 3x5 font below, scaled by fontScale, with its top
// left corner at (x, y). Letters are drawn as capitals; unknown runes blank.
func drawText(img *image.RGBA, x, y int, s string, col color.RGBA) {
	for _, r := range strings.ToUpper(s) {
		g := font3x5[r]
		for row := 0; row < glyphH && g != ""; row++ {
			for colIdx := 0; colIdx < glyphW; colIdx++ {
				if g[row*glyphW+colIdx] == '#' {
					fill(img, image.Rect(x+colIdx*fontScale, y+row*fontScale, x+(colIdx+1)*fontScale, y+(row+1)*fontScale), col)
				}
			}
		}
		x += (glyphW + glyphGap) * fontScale
	}
}

// font3x5 holds 5 rows of 3 pixels per glyph, '#' set.
var font3x5 = map[rune]string{
	'0': "####.##.##.####", '1': ".#.##..#..#.###", '2': "###..#####..###", '3': "###..####..####",
	'4': "#.##.####..#..#", '5': "####..###..####", '6': "####..####.####", '7': "###..#..#..#..#",
	'8': "####.#####.####", '9': "####.####..####", 'A': ".#.#.#####.##.#", 'B': "##.#.###.#.###.",
	'C': "####..#..#..###", 'D': "##.#.##.##.###.", 'E': "####..####..###", 'F': "####..####..#..",
	'G': "####..#.##.####", 'H': "#.##.#####.##.#", 'I': "###.#..#..#.###", 'J': "..#..#..##.####",
	'K': "#.##.###.#.##.#", 'L': "#..#..#..#..###", 'M': "#.########.##.#", 'N': "##.#.##.##.##.#",
	'O': ".#.#.##.##.#.#.", 'P': "####.#####..#..", 'Q': "####.##.####..#", 'R': "##.#.###.#.##.#",
	'S': "####..###..####", 'T': "###.#..#..#..#.", 'U': "#.##.##.##.####", 'V': "#.##.##.##.#.#.",
	'W': "#.##.########.#", 'X': "#.##.#.#.#.##.#", 'Y': "#.##.#.#..#..#.", 'Z': "###..#.#.#..###",
	'.': ".............#.", '-': "......###......", ':': "....#.....#....", '/': "..#..#.#.#..#..",
	'(': ".#.#..#..#...#.", ')': ".#...#..#..#.#.", ',': "..........#.#..", '=': "...###...###...",
	' ': "...............",
}
