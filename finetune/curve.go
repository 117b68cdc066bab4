package finetune

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
)

// Curve image geometry.
const (
	curveW, curveH = 800, 480
	marginL        = 72
	marginR        = 24
	marginT        = 24
	marginB        = 56
	glyphScale     = 2
)

var (
	colBG    = color.RGBA{255, 255, 255, 255}
	colAxis  = color.RGBA{40, 40, 40, 255}
	colGrid  = color.RGBA{225, 225, 225, 255}
	colTrain = color.RGBA{31, 119, 180, 255}
	colDev   = color.RGBA{255, 127, 14, 255}
)

// CurvePNG draws the loss curve: train loss per optimizer step and dev loss
// at each epoch end (placed at that epoch's last step), with axes, ticks
// labelled by a built-in bitmap font, and a legend box.
func CurvePNG(stepLosses []float32, epochs []EpochStats) ([]byte, error) {
	img := image.NewRGBA(image.Rect(0, 0, curveW, curveH))
	fill(img, img.Bounds(), colBG)
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, l := range stepLosses {
		if v := float64(l); !math.IsNaN(v) && !math.IsInf(v, 0) {
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
	}
	for _, e := range epochs {
		lo, hi = math.Min(lo, e.DevLoss), math.Max(hi, e.DevLoss)
	}
	if math.IsInf(lo, 0) {
		lo, hi = 0, 1
	}
	if hi-lo < 1e-6 {
		lo, hi = lo-0.5, hi+0.5
	}
	pad := (hi - lo) * 0.05
	lo, hi = math.Max(0, lo-pad), hi+pad
	maxStep := max(len(stepLosses), 1)
	for _, e := range epochs {
		maxStep = max(maxStep, e.Step)
	}
	x0, x1, y0, y1 := marginL, curveW-marginR, curveH-marginB, marginT
	px := func(step float64) int { return x0 + int(math.Round(step/float64(maxStep)*float64(x1-x0))) }
	py := func(v float64) int { return y0 - int(math.Round((v-lo)/(hi-lo)*float64(y0-y1))) }

	// Grid, ticks and labels.
	const ticks = 5
	for i := 0; i <= ticks; i++ {
		v := lo + (hi-lo)*float64(i)/ticks
		y := py(v)
		hline(img, x0, x1, y, colGrid)
		hline(img, x0-6, x0, y, colAxis)
		label := fmt.Sprintf("%.2f", v)
		drawText(img, x0-10-textWidth(label), y-5*glyphScale/2, label, colAxis)
		s := float64(maxStep) * float64(i) / ticks
		x := px(s)
		vline(img, x, y1, y0, colGrid)
		vline(img, x, y0, y0+6, colAxis)
		sl := fmt.Sprintf("%d", int(math.Round(s)))
		drawText(img, x-textWidth(sl)/2, y0+12, sl, colAxis)
	}
	hline(img, x0, x1, y0, colAxis)
	vline(img, x0, y1, y0, colAxis)
	drawText(img, (x0+x1)/2-textWidth("step")/2, y0+30, "step", colAxis)
	drawText(img, 8, 4, "loss", colAxis)

	// Train loss per step.
	prevX, prevY, have := 0, 0, false
	for i, l := range stepLosses {
		v := float64(l)
		if math.IsNaN(v) || math.IsInf(v, 0) {
			have = false
			continue
		}
		x, y := px(float64(i+1)), py(v)
		if have {
			line(img, prevX, prevY, x, y, colTrain)
		}
		prevX, prevY, have = x, y, true
	}
	// Dev loss per epoch, with markers.
	for i, e := range epochs {
		x, y := px(float64(e.Step)), py(e.DevLoss)
		fill(img, image.Rect(x-3, y-3, x+4, y+4), colDev)
		if i > 0 {
			p := epochs[i-1]
			line(img, px(float64(p.Step)), py(p.DevLoss), x, y, colDev)
		}
	}

	// Legend box in the top right corner.
	lw, lh := 150, 50
	lx, ly := x1-lw-8, y1+8
	fill(img, image.Rect(lx, ly, lx+lw, ly+lh), colBG)
	rect(img, lx, ly, lx+lw, ly+lh, colAxis)
	line(img, lx+10, ly+14, lx+40, ly+14, colTrain)
	drawText(img, lx+48, ly+9, "train loss", colAxis)
	line(img, lx+10, ly+34, lx+40, ly+34, colDev)
	fill(img, image.Rect(lx+22, ly+31, lx+29, ly+38), colDev)
	drawText(img, lx+48, ly+29, "dev loss", colAxis)

	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return nil, fmt.Errorf("curve: %w", err)
	}
	return buf.Bytes(), nil
}

func fill(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	r = r.Intersect(img.Bounds())
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			img.SetRGBA(x, y, c)
		}
	}
}

func hline(img *image.RGBA, xa, xb, y int, c color.RGBA) {
	for x := xa; x <= xb; x++ {
		img.SetRGBA(x, y, c)
	}
}

func vline(img *image.RGBA, x, ya, yb int, c color.RGBA) {
	for y := ya; y <= yb; y++ {
		img.SetRGBA(x, y, c)
	}
}

func rect(img *image.RGBA, xa, ya, xb, yb int, c color.RGBA) {
	hline(img, xa, xb, ya, c)
	hline(img, xa, xb, yb, c)
	vline(img, xa, ya, yb, c)
	vline(img, xb, ya, yb, c)
}

// line draws a two-pixel-wide segment (Bresenham).
func line(img *image.RGBA, xa, ya, xb, yb int, c color.RGBA) {
	dx, dy := abs(xb-xa), -abs(yb-ya)
	sx, sy := sign(xb-xa), sign(yb-ya)
	err := dx + dy
	for {
		img.SetRGBA(xa, ya, c)
		img.SetRGBA(xa, ya+1, c)
		if xa == xb && ya == yb {
			return
		}
		e2 := 2 * err
		if e2 >= dy {
			err += dy
			xa += sx
		}
		if e2 <= dx {
			err += dx
			ya += sy
		}
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

func sign(v int) int {
	switch {
	case v < 0:
		return -1
	case v > 0:
		return 1
	}
	return 0
}
