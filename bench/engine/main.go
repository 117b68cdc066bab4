// Command engine measures issue 15's continuous-batching engine (package
// generation) against today's path, one job at a time per loaded model (a
// mutex around model.Generate, as generation.LoadedModel did before issue 15), in one run, on
// the same scenarios, and prints both sides with the ratio engine/baseline
// and issue 15's targets:
//
//  1. one stream alone: first-token p50/p99, tokens/s;
//  2. -streams concurrent streams: tokens/s in all, ratio to 1, first token;
//  3. one stream at a time (-during-streams of them, each -interval after
//     the previous one ended) while a batch runs: first token against 1
//     (target: p99 at most 3x), tokens/s after the first token against 1
//     (target: at least 0.5x);
//  4. a batch alone: -batch-rows rows in chunk jobs of -chunk-rows, run by
//     -handlers goroutines as a worker with that concurrency would;
//  5. the batch of 4 while -beside-streams streams run continuously beside
//     it: batch tokens/s against 4 (target: at least 0.85x).
//
// The model has GPT-2 124M shapes (builtin tiny shapes with -quick) and
// random weights; there is no tokenizer, so no token ends a completion and
// every stream and row makes exactly -tokens tokens.
//
// The engine side (engine_side.go) builds with -tags engine until package
// generation lands; without it only the baseline runs.
//
// Usage: engine [-scenarios 1,2,3,4,5] [-tokens 32] [-streams 8] [-batch-rows 64] [-quick] [-out bench/out/engine.json]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tandem-ai/tandem/generation"
	"github.com/tandem-ai/tandem/limits"
	"github.com/tandem-ai/tandem/model"
)

// engineFlags configure the engine side; zero leaves a field to the
// engine's default.
type engineFlags struct {
	slots, prefillTokens int
}

// target is one of issue 15's goals, on one figure.
type target struct {
	Figure    string  `json:"figure"`
	Label     string  `json:"label"`
	AtLeast   bool    `json:"at_least"` // else at most
	Threshold float64 `json:"threshold"`
}

func (t target) met(v float64) bool {
	if t.AtLeast {
		return v >= t.Threshold
	}
	return v <= t.Threshold
}

var targets = []target{
	{"3.first_token_p99_ratio", "3: first token p99 during the batch <= 3x alone", false, 3},
	{"3.decode_ratio", "3: stream tokens/s during the batch >= 0.5x alone", true, 0.5},
	{"5.tokens_ratio", "5: batch tokens/s beside streams >= 0.85x alone", true, 0.85},
}

func main() {
	var (
		list = flag.String("scenarios", "1,2,3,4,5", "comma-separated scenario numbers (2 and 3 also run 1, 5 also runs 4)")
		w    = workload{}
		ef   engineFlags
	)
	flag.IntVar(&w.tokens, "tokens", 32, "new tokens per stream and per batch row")
	flag.IntVar(&w.runs, "runs", 5, "repetitions of scenarios 1 and 2")
	flag.IntVar(&w.streams, "streams", 8, "concurrent streams in scenario 2")
	flag.IntVar(&w.duringStreams, "during-streams", 10, "streams, one at a time, in scenario 3")
	flag.DurationVar(&w.interval, "interval", 300*time.Millisecond, "scenario 3: the pause before each stream")
	flag.IntVar(&w.besideStreams, "beside-streams", 4, "streams running continuously beside the batch in scenario 5")
	flag.IntVar(&w.batchRows, "batch-rows", 64, "rows of the batch in scenarios 3, 4 and 5")
	flag.IntVar(&w.chunkRows, "chunk-rows", limits.DefaultDecodeRows, "rows of one chunk job")
	flag.IntVar(&w.handlers, "handlers", 4, "chunk jobs run at once (a worker's concurrency)")
	flag.IntVar(&ef.slots, "slots", 0, "engine: EngineConfig.Slots (0: the engine's default)")
	flag.IntVar(&ef.prefillTokens, "prefill-tokens", 0, "engine: EngineConfig.PrefillTokens (0: the engine's default)")
	sidesFlag := flag.String("sides", "baseline,engine", "comma-separated sides to run")
	quick := flag.Bool("quick", false, "builtin tiny shapes instead of GPT-2 124M, for a smoke run")
	seed := flag.Uint64("seed", 1, "seed of the weights and prompts")
	out := flag.String("out", "bench/out/engine.json", "JSON output file (empty: none)")
	flag.Parse()
	if err := run(w, ef, *list, *sidesFlag, *quick, *seed, *out); err != nil {
		fmt.Fprintln(os.Stderr, "engine:", err)
		os.Exit(1)
	}
}

func run(w workload, ef engineFlags, list, sidesFlag string, quick bool, seed uint64, out string) error {
	ids, err := selectScenarios(list)
	if err != nil {
		return err
	}
	if err := w.validate(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	cfg, shape := model.GPT2Small(), "GPT-2 124M"
	if quick {
		// The shape workers serve as builtin:tiny.
		cfg, shape = generation.BuiltinConfigs["tiny"], "builtin:tiny"
	}
	env := environment(shape, cfg)
	env.print(os.Stdout)

	var sides []side
	var notes []string
	for _, name := range strings.Split(sidesFlag, ",") {
		// Each side gets its own copy of the weights (same seed): a model
		// keeps scratch buffers, and the sides must not share them.
		var m *model.Model
		if name == "baseline" || name == "engine" {
			if m, err = model.New(cfg, int64(seed)); err != nil {
				return err
			}
		}
		switch name {
		case "baseline":
			sides = append(sides, newBaseline(m))
		case "engine":
			s, err := newEngineSide(m, ef)
			if err != nil {
				notes = append(notes, "engine side: "+err.Error())
				continue
			}
			sides = append(sides, s)
		case "":
		default:
			return fmt.Errorf("-sides: unknown side %q", name)
		}
	}
	defer func() {
		for _, s := range sides {
			s.close()
		}
	}()
	if len(sides) == 0 {
		return fmt.Errorf("-sides %q: no side to run (%s)", sidesFlag, strings.Join(notes, "; "))
	}

	rep := newReport(sides)
	r := &runner{w: w, prompts: &prompts{rng: rand.New(rand.NewPCG(seed, 2)), vocab: cfg.VocabSize}, report: rep}
	for _, s := range sides {
		if err := r.warmUp(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", s.name(), err)
		}
	}
	// Sides take turns per scenario, so a change in the machine's load
	// touches both rather than one.
	for _, sc := range scenarios {
		if !slices.Contains(ids, sc.id) {
			continue
		}
		for _, s := range sides {
			fmt.Fprintf(os.Stderr, "scenario %d (%s), %s...", sc.id, sc.title, s.name())
			t0 := time.Now()
			if err := sc.run(r, ctx, s); err != nil {
				fmt.Fprintln(os.Stderr)
				return fmt.Errorf("scenario %d, %s: %w", sc.id, s.name(), err)
			}
			fmt.Fprintf(os.Stderr, " %.1fs\n", time.Since(t0).Seconds())
		}
	}
	env.LoadEnd = loadAverage()

	fmt.Println()
	rep.print(os.Stdout)
	for _, n := range notes {
		fmt.Println("note:", n)
	}
	if env.LoadStart > 0.75*float64(env.CPUs) || env.LoadEnd > 0.75*float64(env.CPUs) {
		fmt.Printf("WARNING: load average %.2f at start, %.2f at end on %d CPUs: other work skews these figures\n", env.LoadStart, env.LoadEnd, env.CPUs)
	}
	if out == "" {
		return nil
	}
	return writeJSON(out, env, w, ef, rep, notes)
}

func (w workload) validate() error {
	for _, f := range []struct {
		name string
		v    int
	}{
		{"-tokens", w.tokens}, {"-runs", w.runs}, {"-streams", w.streams}, {"-during-streams", w.duringStreams},
		{"-beside-streams", w.besideStreams}, {"-batch-rows", w.batchRows}, {"-chunk-rows", w.chunkRows}, {"-handlers", w.handlers},
	} {
		if f.v < 1 {
			return fmt.Errorf("%s = %d, want >= 1", f.name, f.v)
		}
	}
	if w.interval < 0 {
		return fmt.Errorf("-interval = %v, want >= 0", w.interval)
	}
	return nil
}

// selectScenarios parses -scenarios and adds the scenarios the chosen ones
// compare against.
func selectScenarios(list string) ([]int, error) {
	var ids []int
	add := func(id int) {
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	for _, f := range strings.Split(list, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		id, err := strconv.Atoi(f)
		i := slices.IndexFunc(scenarios, func(s scenario) bool { return s.id == id })
		if err != nil || i < 0 {
			return nil, fmt.Errorf("-scenarios: %q is not a scenario (1 to %d)", f, len(scenarios))
		}
		add(id)
		for _, n := range scenarios[i].needs {
			add(n)
		}
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("-scenarios %q: none chosen", list)
	}
	return ids, nil
}

// env describes the run's machine and model.
type env struct {
	Model            string       `json:"model"`
	Config           model.Config `json:"config"`
	Params           int          `json:"params"`
	BLAS             string       `json:"blas"`
	GOMAXPROCS       int          `json:"gomaxprocs"`
	CPUs             int          `json:"cpus"`
	OpenBLASCoretype *string      `json:"openblas_coretype"`  // null when unset
	LoadStart        float64      `json:"load_average_start"` // -1: unknown
	LoadEnd          float64      `json:"load_average_end"`
}

func environment(shape string, cfg model.Config) env {
	e := env{
		Model: shape, Config: cfg, Params: cfg.NumParams(), BLAS: model.BLASName,
		GOMAXPROCS: runtime.GOMAXPROCS(0), CPUs: runtime.NumCPU(), LoadStart: loadAverage(),
	}
	if v, ok := os.LookupEnv("OPENBLAS_CORETYPE"); ok {
		e.OpenBLASCoretype = &v
	}
	return e
}

func (e env) print(f *os.File) {
	core := "unset"
	if e.OpenBLASCoretype != nil {
		core = "set to " + *e.OpenBLASCoretype
	}
	fmt.Fprintf(f, "model: %s shapes, random weights (%d params), %s\n", e.Model, e.Params, e.BLAS)
	fmt.Fprintf(f, "GOMAXPROCS %d of %d CPUs; OPENBLAS_CORETYPE %s; load average at start %.2f\n", e.GOMAXPROCS, e.CPUs, core, e.LoadStart)
}

// loadAverage is the 1-minute load average, or -1 where /proc has none.
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	v, err := strconv.ParseFloat(strings.Fields(string(b) + " x")[0], 64)
	if err != nil {
		return -1
	}
	return v
}

// report holds every side's figures, in the order they were first set.
type report struct {
	sides  []string
	order  []string
	labels map[string]string
	values map[string]map[string]float64 // side, figure
}

func newReport(sides []side) *report {
	r := &report{labels: map[string]string{}, values: map[string]map[string]float64{}}
	for _, s := range sides {
		r.sides = append(r.sides, s.name())
		r.values[s.name()] = map[string]float64{}
	}
	return r
}

func (r *report) set(s side, key, label string, v float64) {
	if _, ok := r.labels[key]; !ok {
		r.order = append(r.order, key)
		r.labels[key] = label
	}
	r.values[s.name()][key] = v
}

// get is s's value of key, NaN if it has none.
func (r *report) get(s side, key string) float64 {
	if v, ok := r.values[s.name()][key]; ok {
		return v
	}
	return math.NaN()
}

// value is side's figure key and whether it has one.
func (r *report) value(side, key string) (float64, bool) {
	v, ok := r.values[side][key]
	return v, ok && !math.IsNaN(v)
}

// ratio is engine/baseline for key, when both sides have it.
func (r *report) ratio(key string) (float64, bool) {
	e, ok1 := r.value("engine", key)
	b, ok2 := r.value("baseline", key)
	if !ok1 || !ok2 || b == 0 {
		return 0, false
	}
	return e / b, true
}

func (r *report) print(f *os.File) {
	cell := func(v float64, ok bool) string {
		if !ok {
			return "-"
		}
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	fmt.Fprintf(f, "%-58s %12s %12s %16s\n", "figure", "baseline", "engine", "engine/baseline")
	for _, k := range r.order {
		b, bok := r.value("baseline", k)
		e, eok := r.value("engine", k)
		q, qok := r.ratio(k)
		fmt.Fprintf(f, "%-58s %12s %12s %16s\n", r.labels[k], cell(b, bok), cell(e, eok), cell(q, qok))
	}
	header := false
	for _, t := range targets {
		if _, ok := r.labels[t.Figure]; !ok {
			continue
		}
		if !header {
			fmt.Fprintf(f, "\n%-58s %12s %12s\n", "issue 15 target", "baseline", "engine")
			header = true
		}
		mark := func(side string) string {
			v, ok := r.value(side, t.Figure)
			if !ok {
				return "-"
			}
			if t.met(v) {
				return fmt.Sprintf("%.2f pass", v)
			}
			return fmt.Sprintf("%.2f FAIL", v)
		}
		fmt.Fprintf(f, "%-58s %12s %12s\n", t.Label, mark("baseline"), mark("engine"))
	}
}

func writeJSON(path string, e env, w workload, ef engineFlags, r *report, notes []string) error {
	type fig struct {
		Key      string   `json:"key"`
		Label    string   `json:"label"`
		Baseline *float64 `json:"baseline"`
		Engine   *float64 `json:"engine"`
		Ratio    *float64 `json:"engine_over_baseline"`
	}
	type tgt struct {
		target
		BaselinePass *bool `json:"baseline_pass"`
		EnginePass   *bool `json:"engine_pass"`
	}
	ptr := func(v float64, ok bool) *float64 {
		if !ok {
			return nil
		}
		return &v
	}
	pass := func(t target, side string) *bool {
		v, ok := r.value(side, t.Figure)
		if !ok {
			return nil
		}
		p := t.met(v)
		return &p
	}
	doc := map[string]any{
		"env": e,
		"workload": map[string]any{
			"tokens": w.tokens, "runs": w.runs, "streams": w.streams, "during_streams": w.duringStreams,
			"interval_ms": w.interval.Milliseconds(), "beside_streams": w.besideStreams,
			"batch_rows": w.batchRows, "chunk_rows": w.chunkRows, "handlers": w.handlers,
		},
		"engine_config": map[string]int{"slots": ef.slots, "prefill_tokens": ef.prefillTokens},
		"sides":         r.sides,
		"notes":         notes,
	}
	var figs []fig
	for _, k := range r.order {
		figs = append(figs, fig{k, r.labels[k], ptr(r.value("baseline", k)), ptr(r.value("engine", k)), ptr(r.ratio(k))})
	}
	var tgts []tgt
	for _, t := range targets {
		tgts = append(tgts, tgt{t, pass(t, "baseline"), pass(t, "engine")})
	}
	doc["figures"], doc["targets"] = figs, tgts
	b, err := json.MarshalIndent(doc, "", " ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
