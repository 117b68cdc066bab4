package loop

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ai/tandem/feedback"
)

// dashboardNow is the seeded dashboard's clock.
var dashboardNow = time.Date(2026, 11, 29, 15, 20, 0, 0, time.UTC)

// seedDashboard records six generations over three hours with feedback of
// every kind and serves the dashboard over them.
func seedDashboard(t *testing.T) *httptest.Server {
	t.Helper()
	rdb := redisClient(t)
	ctx := context.Background()
	store := NewStore(rdb, StoreOptions{})
	m := NewMetrics(rdb, MetricsOptions{})
	feedback := [][]Feedback{
		{{Action: feedback.ActionAccept}, {Action: feedback.ActionRate, Value: 5}},
		{{Action: feedback.ActionReject}},
		{{Action: feedback.ActionEdit, EditedText: "Crisp leaves drift down on the quiet road"}, {Action: feedback.ActionRate, Value: 4}},
		{{Action: feedback.ActionRegenerate}},
		{{Action: feedback.ActionAccept}},
		{}, // no feedback yet
	}
	for i, fbs := range feedback {
		at := dashboardNow.Add(time.Duration(i-5) * 30 * time.Minute)
		g := Generation{
			ID: fmt.Sprintf("gen-dash-%d", i+1), User: fmt.Sprintf("u%d", i%3+1), Model: []string{"builtin:tiny", "demo@2"}[i%2],
			Template: []string{"tpl-haiku", "tpl-blurb", ""}[i%3], Topic: "topic-autumn",
			Prompt: "Write a haiku about autumn:", Text: fmt.Sprintf("Leaves drift down on the road, number %d", i+1),
			Source: "personalize", CreatedAt: at,
		}
		if err := store.Save(ctx, g); err != nil {
			t.Fatal(err)
		}
		for _, fb := range fbs {
			ev, err := NewFeedbackEvent(g, fb, at)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := m.Record(ctx, ev, at.Add(time.Minute)); err != nil {
				t.Fatal(err)
			}
		}
	}
	srv := httptest.NewServer(&Dashboard{Store: store, Metrics: m, Now: func() time.Time { return dashboardNow }})
	t.Cleanup(srv.Close)
	return srv
}

func TestDashboardPage(t *testing.T) {
	srv := seedDashboard(t)
	resp, err := http.Get(srv.URL + "?hours=6")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	page := string(body)
	checkDashboard(t, page)
	// Nothing is fetched from elsewhere: no script, no link, no remote image.
	for _, bad := range []string{"<script", "<link", "src=", "@import", "url("} {
		if strings.Contains(page, bad) {
			t.Errorf("page contains %q: it must be self-contained", bad)
		}
	}
	resp, err = http.Get(srv.URL + "?hours=0")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("hours=0: %d, want 400", resp.StatusCode)
	}
}

// checkDashboard checks the seeded page, as served or as a browser's DOM.
func checkDashboard(t *testing.T, page string) {
	t.Helper()
	// Feedback fell in three hours (12:30-13:00, 13:30-14:00, 14:30): each
	// line plot has a point per hour with its kind of feedback.
	for id, points := range map[string]int{"plot-acceptance": 3, "plot-rating": 2, "plot-edit": 1, "plot-volume": 3} {
		re := regexp.MustCompile(`<svg[^>]*id="` + id + `"[^>]*data-points="(\d+)"`)
		m := re.FindStringSubmatch(page)
		if m == nil || m[1] != fmt.Sprint(points) {
			t.Errorf("plot %s: %v, want data-points=%d", id, m, points)
		}
	}
	if n := strings.Count(page, `class="pt"`); n != 3+2+1 {
		t.Errorf("%d plotted points, want 6", n)
	}
	if n := strings.Count(page, `class="bar"`); n < 3 {
		t.Errorf("%d volume bars, want at least 3", n)
	}
	for i := 1; i <= 6; i++ {
		if !strings.Contains(page, fmt.Sprintf(`data-id="gen-dash-%d"`, i)) {
			t.Errorf("recent generation gen-dash-%d missing", i)
		}
	}
	for _, want := range []string{"rated 5/5", "rated 4/5", "edited 0.", "rejected", "regenerated", "none yet",
		"tpl-haiku", "demo@2", `id="topics"`, `<code>topic-autumn</code></td><td class="n">7</td>`, "Leaves drift down on the road, number 6", "60%"} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
}

// chromiumFlags start a headless Chromium that talks to nothing but the
// page it is given.
var chromiumFlags = []string{
	"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
	"--disable-background-networking", "--disable-component-update", "--disable-sync",
	"--hide-scrollbars", "--window-size=1360,1700",
}

// chromium returns the browser's path. Tests that need it fail without
// it (CI installs it with scripts/install-deps.sh) unless
// TANDEM_SKIP_BROWSER=1 asks to skip them.
func chromium(t *testing.T) string {
	t.Helper()
	if os.Getenv("TANDEM_SKIP_BROWSER") == "1" {
		t.Skip("TANDEM_SKIP_BROWSER=1")
	}
	for _, p := range []string{os.Getenv("TANDEM_CHROMIUM"), "/usr/bin/chromium", "chromium", "chromium-browser"} {
		if p == "" {
			continue
		}
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	t.Fatal("headless Chromium is needed: install Debian's chromium (scripts/install-deps.sh), set TANDEM_CHROMIUM, or set TANDEM_SKIP_BROWSER=1 to skip")
	return ""
}

// runChromium runs the browser with a fresh profile and returns stdout.
func runChromium(t *testing.T, bin string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	all := append(append([]string{}, chromiumFlags...), "--user-data-dir="+t.TempDir())
	cmd := exec.CommandContext(ctx, bin, append(all, args...)...)
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, stderr.String())
	}
	return stdout.Bytes()
}

func TestDashboardInChromium(t *testing.T) {
	bin := chromium(t)
	srv := seedDashboard(t)
	url := srv.URL + "/dashboard?hours=6"

	// The DOM as the browser built it: the SVG plots and the generations
	// are there after parsing.
	dom := string(runChromium(t, bin, "--dump-dom", url))
	if !strings.Contains(dom, "The human-AI loop") {
		t.Fatalf("the browser's DOM is not the dashboard:\n%.2000s", dom)
	}
	checkDashboard(t, dom)

	// The screenshot shows the plots: the line colour and the colour of
	// every action's bar are on the picture.
	shot := filepath.Join(t.TempDir(), "dashboard.png")
	runChromium(t, bin, "--screenshot="+shot, url)
	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != 1360 || b.Dy() != 1700 {
		t.Fatalf("screenshot is %v, want 1360x1700", b)
	}
	for name, rgb := range map[string][3]uint8{
		"line": {0x09, 0x69, 0xda}, "accept": {0x2e, 0x7d, 0x32}, "edit": {0x15, 0x65, 0xc0},
		"rate": {0x8e, 0x24, 0xaa}, "regenerate": {0xef, 0x6c, 0x00}, "reject": {0xc6, 0x28, 0x28},
	} {
		if n := countColour(img, rgb); n < 20 {
			t.Errorf("screenshot has %d pixels of the %s colour #%02x%02x%02x, want the plots drawn", n, name, rgb[0], rgb[1], rgb[2])
		}
	}
	if dst := os.Getenv("TANDEM_DASHBOARD_SCREENSHOT"); dst != "" {
		b, _ := os.ReadFile(shot)
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// countColour counts pixels within a small distance of rgb.
func countColour(img image.Image, rgb [3]uint8) int {
	n := 0
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			if near8(r, rgb[0]) && near8(g, rgb[1]) && near8(bl, rgb[2]) {
				n++
			}
		}
	}
	return n
}

func near8(v uint32, c uint8) bool {
	d := int(v>>8) - int(c)
	return d >= -6 && d <= 6
}
