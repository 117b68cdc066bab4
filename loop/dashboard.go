package loop

import (
	"context"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tandem-ai/tandem/feedback"
)

// Dashboard defaults and bounds.
const (
	DefaultDashboardHours = 24
	// DashboardRecent is how many recent generations the page lists.
	DashboardRecent = 30
	// dashboardTimeout bounds the Redis reads of one page.
	dashboardTimeout = 10 * time.Second
	// snippetRunes bounds the prompt and text shown per generation.
	snippetRunes = 160
)

// Dashboard serves a self-contained HTML page of the loop: the metrics
// over time as inline SVG plots drawn on the server (no script, no
// external asset, so it works offline and under a strict CSP) and the
// recent generations with the feedback they got. ?hours=N picks the
// window (1..MaxMetricsHours, default 24).
type Dashboard struct {
	Store   *Store
	Metrics *Metrics
	Logger  *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// ServeHTTP implements http.Handler.
func (d *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hours := DefaultDashboardHours
	if s := r.URL.Query().Get("hours"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxMetricsHours {
			http.Error(w, fmt.Sprintf("hours: want an integer in [1, %d]", MaxMetricsHours), http.StatusBadRequest)
			return
		}
		hours = n
	}
	ctx, cancel := context.WithTimeout(r.Context(), dashboardTimeout)
	defer cancel()
	page, err := d.page(ctx, hours)
	if err != nil {
		if d.Logger != nil {
			d.Logger.Error("dashboard", "err", err)
		}
		http.Error(w, "the loop dashboard could not read Redis: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:")
	if err := dashboardTmpl.Execute(w, page); err != nil && d.Logger != nil {
		d.Logger.Warn("dashboard render", "err", err)
	}
}

// dashboardPage is what the template renders.
type dashboardPage struct {
	Hours       int
	From, To    time.Time
	Window      Stats
	Total       Stats
	Plots       []chart
	Templates   []namedStats
	Topics      []namedStats
	Models      []namedStats
	Recent      []recentRow
	GeneratedAt time.Time
}

type namedStats struct {
	Name string
	Stats
}

type recentRow struct {
	Generation
	Feedback GenerationFeedback
	Item     string
}

func (d *Dashboard) page(ctx context.Context, hours int) (dashboardPage, error) {
	now := time.Now
	if d.Now != nil {
		now = d.Now
	}
	t := now().UTC()
	v, err := d.Metrics.ReadOverall(ctx, t, hours) // the plots use each hour's overall counters only
	if err != nil {
		return dashboardPage{}, err
	}
	recent, err := d.Store.Recent(ctx, DashboardRecent)
	if err != nil {
		return dashboardPage{}, err
	}
	ids := make([]string, len(recent))
	for i, g := range recent {
		ids[i] = g.ID
	}
	fbs, err := d.Metrics.FeedbackOf(ctx, ids)
	if err != nil {
		return dashboardPage{}, err
	}
	p := dashboardPage{Hours: hours, From: v.From, To: v.To, Total: v.Total.All, GeneratedAt: t}
	var window Counts
	for _, b := range v.Series {
		window = addCounts(window, b.All.Counts)
	}
	p.Window = statsOf(window)
	p.Plots = []chart{
		lineChart("plot-acceptance", "Acceptance rate", "(accepts + edits) / decisions, per hour", v.Series, 0, 1, "%.0f%%", 100,
			func(s Stats) *float64 { return s.AcceptanceRate }),
		lineChart("plot-rating", "Mean rating", "1 to 5, per hour", v.Series, 1, 5, "%.0f", 1,
			func(s Stats) *float64 { return s.MeanRating }),
		lineChart("plot-edit", "Edit distance of edits", "normalised word Levenshtein, 0 = unchanged, per hour", v.Series, 0, 1, "%.2f", 1,
			func(s Stats) *float64 { return s.MeanEditDistance }),
		volumeChart("plot-volume", "Feedback per hour", "by action", v.Series),
	}
	p.Templates = sortedStats(v.Total.Template)
	p.Topics = sortedStats(v.Total.Topic)
	p.Models = sortedStats(v.Total.Model)
	for i, g := range recent {
		row := recentRow{Generation: g, Feedback: fbs[i]}
		row.Prompt = snippet(g.Prompt)
		row.Text = snippet(g.Text)
		switch {
		case g.Template != "" && g.Topic != "":
			row.Item = "template " + g.Template + " · topic " + g.Topic
		case g.Template != "":
			row.Item = "template " + g.Template
		case g.Topic != "":
			row.Item = "topic " + g.Topic
		}
		p.Recent = append(p.Recent, row)
	}
	return p, nil
}

func addCounts(a, b Counts) Counts {
	return Counts{
		Events: a.Events + b.Events, Accept: a.Accept + b.Accept, Reject: a.Reject + b.Reject,
		Rate: a.Rate + b.Rate, Edit: a.Edit + b.Edit, Regenerate: a.Regenerate + b.Regenerate,
		RatingSum: a.RatingSum + b.RatingSum, EditDistanceSum: a.EditDistanceSum + b.EditDistanceSum,
	}
}

// sortedStats orders names by event count, busiest first.
func sortedStats(m map[string]Stats) []namedStats {
	out := make([]namedStats, 0, len(m))
	for n, s := range m {
		out = append(out, namedStats{Name: n, Stats: s})
	}
	slices.SortFunc(out, func(a, b namedStats) int {
		if a.Events != b.Events {
			return int(b.Events - a.Events)
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out
}

func snippet(s string) string {
	r := []rune(strings.Join(strings.Fields(s), " "))
	if len(r) <= snippetRunes {
		return string(r)
	}
	return string(r[:snippetRunes]) + "…"
}

// Chart geometry, in SVG user units.
const (
	chartW, chartH        = 640, 200
	chartLeft, chartRight = 48, 12
	chartTop, chartBottom = 12, 28
	plotW                 = chartW - chartLeft - chartRight
	plotH                 = chartH - chartTop - chartBottom
	maxXLabels            = 8
	volumeActionsInLegend = 5
	pointRadius           = 3.5
	barGapFraction        = 0.2
	chartMinimumBarWidth  = 1.0
	chartLabelFontSize    = 11
)

// chart is one SVG plot, its geometry computed here so the template only
// places numbers.
type chart struct {
	ID, Title, Subtitle string
	W, H                int
	Points              int // hours with data
	YTicks              []tick
	XTicks              []tick
	Line                string // polyline points
	Dots                []dot
	Bars                []bar
	Legend              []legendItem
	FontSize            int
	PlotLeft, PlotRight float64
	PlotTop, PlotBottom float64
}

type tick struct {
	Pos   float64
	Label string
}

type dot struct {
	X, Y  float64
	R     float64
	Title string
}

type bar struct {
	X, Y, W, H float64
	Color      string
	Title      string
}

type legendItem struct {
	Label, Color string
	X            float64
}

func newChart(id, title, subtitle string, series []Bucket) chart {
	c := chart{
		ID: id, Title: title, Subtitle: subtitle, W: chartW, H: chartH, FontSize: chartLabelFontSize,
		PlotLeft: chartLeft, PlotRight: chartW - chartRight, PlotTop: chartTop, PlotBottom: chartH - chartBottom,
	}
	n := len(series)
	step := max(1, (n+maxXLabels-1)/maxXLabels)
	for i := 0; i < n; i += step {
		label := series[i].Start.Format("15:04")
		if n > 24 {
			label = series[i].Start.Format("Jan 2 15h")
		}
		c.XTicks = append(c.XTicks, tick{Pos: c.x(i, n), Label: label})
	}
	return c
}

// x is the centre of hour i of n.
func (c chart) x(i, n int) float64 {
	return chartLeft + (float64(i)+0.5)*plotW/float64(n)
}

func lineChart(id, title, subtitle string, series []Bucket, lo, hi float64, format string, scale float64, value func(Stats) *float64) chart {
	c := newChart(id, title, subtitle, series)
	y := func(v float64) float64 {
		f := (min(max(v, lo), hi) - lo) / (hi - lo)
		return chartTop + (1-f)*plotH
	}
	for k := 0; k <= 4; k++ {
		v := lo + (hi-lo)*float64(k)/4
		c.YTicks = append(c.YTicks, tick{Pos: y(v), Label: fmt.Sprintf(format, v*scale)})
	}
	var pts []string
	for i, b := range series {
		v := value(b.All)
		if v == nil {
			continue
		}
		px, py := c.x(i, len(series)), y(*v)
		pts = append(pts, fmt.Sprintf("%.1f,%.1f", px, py))
		c.Dots = append(c.Dots, dot{X: px, Y: py, R: pointRadius,
			Title: fmt.Sprintf("%s: "+format+" (%d events)", b.Start.Format("Jan 2 15:04"), *v*scale, b.All.Events)})
	}
	c.Points = len(c.Dots)
	c.Line = strings.Join(pts, " ")
	return c
}

// volumeColors are the bar colours per action, in stacking order.
var volumeColors = []struct{ action, color string }{
	{feedback.ActionAccept, "#2e7d32"}, {feedback.ActionEdit, "#1565c0"}, {feedback.ActionRate, "#8e24aa"},
	{feedback.ActionRegenerate, "#ef6c00"}, {feedback.ActionReject, "#c62828"},
}

func volumeChart(id, title, subtitle string, series []Bucket) chart {
	c := newChart(id, title, subtitle, series)
	var top int64 = 1
	for _, b := range series {
		top = max(top, b.All.Events)
	}
	step := niceStep(top)
	hi := float64(step * 4)
	y := func(v float64) float64 { return chartTop + (1-v/hi)*plotH }
	for k := 0; k <= 4; k++ {
		c.YTicks = append(c.YTicks, tick{Pos: y(float64(step) * float64(k)), Label: strconv.FormatInt(step*int64(k), 10)})
	}
	slot := float64(plotW) / float64(max(1, len(series)))
	w := max(chartMinimumBarWidth, slot*(1-barGapFraction))
	for i, b := range series {
		counts := map[string]int64{feedback.ActionAccept: b.All.Accept, feedback.ActionEdit: b.All.Edit, feedback.ActionRate: b.All.Rate, feedback.ActionRegenerate: b.All.Regenerate, feedback.ActionReject: b.All.Reject}
		base := 0.0
		for _, vc := range volumeColors {
			n := counts[vc.action]
			if n == 0 {
				continue
			}
			y0, y1 := y(base), y(base+float64(n))
			c.Bars = append(c.Bars, bar{X: c.x(i, len(series)) - w/2, Y: y1, W: w, H: y0 - y1, Color: vc.color,
				Title: fmt.Sprintf("%s: %d %s", b.Start.Format("Jan 2 15:04"), n, vc.action)})
			base += float64(n)
		}
		if b.All.Events > 0 {
			c.Points++
		}
	}
	for k, vc := range volumeColors[:volumeActionsInLegend] {
		c.Legend = append(c.Legend, legendItem{Label: vc.action, Color: vc.color, X: chartLeft + float64(k)*96})
	}
	return c
}

// niceStep is the smallest of 1, 2, 5, 10, 20, 50, ... whose four ticks
// reach top, so the axis reads well.
func niceStep(top int64) int64 {
	for mag := int64(1); ; mag *= 10 {
		for _, b := range []int64{1, 2, 5} {
			if b*mag*4 >= top {
				return b * mag
			}
		}
	}
}

var dashboardFuncs = template.FuncMap{
	"pct": func(v *float64) string {
		if v == nil {
			return "–"
		}
		return fmt.Sprintf("%.0f%%", *v*100)
	},
	"num": func(v *float64) string {
		if v == nil {
			return "–"
		}
		return fmt.Sprintf("%.2f", *v)
	},
	"when": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04") },
	"sub":  func(a, b float64) float64 { return a - b },
	"add":  func(a, b float64) float64 { return a + b },
}

var dashboardTmpl = template.Must(template.New("dashboard").Funcs(dashboardFuncs).Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Tandem · the human-AI loop</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 0 auto; max-width: 1360px; padding: 16px 24px; color: #1f2328; background: #f6f8fa; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 24px 0 8px; }
.sub { color: #57606a; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; margin: 16px 0; }
.card { background: #fff; border: 1px solid #d0d7de; border-radius: 6px; padding: 10px 14px; min-width: 150px; }
.card b { display: block; font-size: 22px; }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(620px, 1fr)); gap: 12px; }
figure { background: #fff; border: 1px solid #d0d7de; border-radius: 6px; margin: 0; padding: 8px; }
figcaption { font-weight: 600; } figcaption span { font-weight: normal; color: #57606a; }
svg { width: 100%; height: auto; display: block; }
table { border-collapse: collapse; width: 100%; background: #fff; border: 1px solid #d0d7de; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid #eaeef2; vertical-align: top; }
th { background: #f0f3f6; font-weight: 600; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
code { font-size: 12px; }
.badge { display: inline-block; border-radius: 10px; padding: 0 8px; margin: 1px; font-size: 12px; color: #fff; }
.accept { background: #2e7d32; } .edit { background: #1565c0; } .rate { background: #8e24aa; }
.regenerate { background: #ef6c00; } .reject { background: #c62828; } .none { background: #8c959f; }
.text { max-width: 420px; } .muted { color: #57606a; }
nav a { margin-right: 10px; }
</style>
</head>
<body>
<h1>The human-AI loop</h1>
<div class="sub">Feedback on generations, from {{when .From}} to {{when .To}} UTC ({{.Hours}} h) · page drawn {{when .GeneratedAt}} UTC</div>
<nav class="sub">window: <a href="?hours=6">6 h</a><a href="?hours=24">24 h</a><a href="?hours=168">7 days</a><a href="?hours=720">30 days</a></nav>
<div class="cards" id="cards">
<div class="card">Acceptance ({{.Hours}} h)<b id="acceptance-window">{{pct .Window.AcceptanceRate}}</b><span class="muted">all time {{pct .Total.AcceptanceRate}}</span></div>
<div class="card">Mean rating ({{.Hours}} h)<b>{{num .Window.MeanRating}}</b><span class="muted">all time {{num .Total.MeanRating}}</span></div>
<div class="card">Edit distance ({{.Hours}} h)<b>{{num .Window.MeanEditDistance}}</b><span class="muted">all time {{num .Total.MeanEditDistance}}</span></div>
<div class="card">Feedback events ({{.Hours}} h)<b id="events-window">{{.Window.Events}}</b><span class="muted">all time {{.Total.Events}}</span></div>
</div>
<div class="plots">
{{range .Plots}}{{$c := .}}<figure>
<figcaption>{{.Title}} <span>{{.Subtitle}}</span></figcaption>
<svg id="{{.ID}}" class="plot" data-points="{{.Points}}" viewBox="0 0 {{.W}} {{.H}}" role="img" aria-label="{{.Title}}" xmlns="http://www.w3.org/2000/svg" font-size="{{.FontSize}}" font-family="system-ui, sans-serif">
<rect x="{{.PlotLeft}}" y="{{.PlotTop}}" width="{{sub .PlotRight .PlotLeft}}" height="{{sub .PlotBottom .PlotTop}}" fill="#fbfcfd" stroke="#d0d7de"/>
{{range .YTicks}}<line x1="{{$c.PlotLeft}}" x2="{{$c.PlotRight}}" y1="{{.Pos}}" y2="{{.Pos}}" stroke="#eaeef2"/><text x="{{sub $c.PlotLeft 6}}" y="{{add .Pos 4}}" text-anchor="end" fill="#57606a">{{.Label}}</text>
{{end}}{{range .XTicks}}<text x="{{.Pos}}" y="{{add $c.PlotBottom 16}}" text-anchor="middle" fill="#57606a">{{.Label}}</text>
{{end}}{{range .Bars}}<rect class="bar" x="{{.X}}" y="{{.Y}}" width="{{.W}}" height="{{.H}}" fill="{{.Color}}"><title>{{.Title}}</title></rect>
{{end}}{{if .Line}}<polyline class="series" points="{{.Line}}" fill="none" stroke="#0969da" stroke-width="2"/>
{{end}}{{range .Dots}}<circle class="pt" cx="{{.X}}" cy="{{.Y}}" r="{{.R}}" fill="#0969da"><title>{{.Title}}</title></circle>
{{end}}{{range .Legend}}<rect x="{{add .X 0}}" y="2" width="10" height="8" fill="{{.Color}}"/><text x="{{add .X 14}}" y="10" fill="#57606a">{{.Label}}</text>
{{end}}{{if eq .Points 0}}<text x="{{add $c.PlotLeft 12}}" y="{{add $c.PlotTop 20}}" fill="#8c959f">no feedback in this window</text>
{{end}}</svg>
</figure>
{{end}}</div>
<h2>Per template (all time)</h2>
<table id="templates"><tr><th>template</th><th>events</th><th>acceptance</th><th>mean rating</th><th>edit distance</th></tr>
{{range .Templates}}<tr><td><code>{{.Name}}</code></td><td class="n">{{.Events}}</td><td class="n">{{pct .AcceptanceRate}}</td><td class="n">{{num .MeanRating}}</td><td class="n">{{num .MeanEditDistance}}</td></tr>
{{else}}<tr><td colspan="5" class="muted">no feedback on templated generations yet</td></tr>
{{end}}</table>
<h2>Per topic (all time)</h2>
<table id="topics"><tr><th>topic</th><th>events</th><th>acceptance</th><th>mean rating</th><th>edit distance</th></tr>
{{range .Topics}}<tr><td><code>{{.Name}}</code></td><td class="n">{{.Events}}</td><td class="n">{{pct .AcceptanceRate}}</td><td class="n">{{num .MeanRating}}</td><td class="n">{{num .MeanEditDistance}}</td></tr>
{{else}}<tr><td colspan="5" class="muted">no feedback on generations from topics yet</td></tr>
{{end}}</table>
<h2>Per model version (all time)</h2>
<table id="models"><tr><th>model</th><th>events</th><th>acceptance</th><th>mean rating</th><th>edit distance</th></tr>
{{range .Models}}<tr><td><code>{{.Name}}</code></td><td class="n">{{.Events}}</td><td class="n">{{pct .AcceptanceRate}}</td><td class="n">{{num .MeanRating}}</td><td class="n">{{num .MeanEditDistance}}</td></tr>
{{else}}<tr><td colspan="5" class="muted">no feedback yet</td></tr>
{{end}}</table>
<h2>Recent generations</h2>
<table id="recent"><tr><th>generation</th><th>user</th><th>from</th><th>prompt → text</th><th>feedback</th></tr>
{{range .Recent}}<tr class="generation" data-id="{{.ID}}"><td><code>{{.ID}}</code><br><span class="muted">{{when .CreatedAt}} · {{.Source}}</span></td><td>{{.User}}</td><td>{{.Item}}<br><span class="muted">{{.Model}}</span></td>
<td class="text"><span class="muted">{{.Prompt}}</span><br>{{.Text}}</td>
<td>{{with .Feedback}}{{if .Accepted}}<span class="badge accept">accepted</span>{{end}}{{if .Edited}}<span class="badge edit">edited {{printf "%.2f" .EditDistance}}</span>{{end}}{{if .Rating}}<span class="badge rate">rated {{.Rating}}/5</span>{{end}}{{if .Regenerated}}<span class="badge regenerate">regenerated</span>{{end}}{{if .Rejected}}<span class="badge reject">rejected</span>{{end}}{{if not .Any}}<span class="badge none">none yet</span>{{end}}{{end}}</td></tr>
{{else}}<tr><td colspan="5" class="muted">no generations recorded yet</td></tr>
{{end}}</table>
</body>
</html>
`))
