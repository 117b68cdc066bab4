package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tandem-ai/tandem/dataroot"
	"github.com/tandem-ai/tandem/finetune"
	"github.com/tandem-ai/tandem/limits"
	"github.com/tandem-ai/tandem/model"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/recsys"
)

// pathsBundle is a data root with real inputs in it, a directory beside it
// whose files no job may read or write, and symbolic links planted in the
// root: some pointing out of it (to files and to directories), some staying
// in.
type pathsBundle struct {
	dir     string // the data root
	outside string // next to it
	deps    *Deps
	reg     *pipeline.Registry
	before  map[string]string // outside's files and contents at the start
}

const testPrompts = `{"custom_id":"a","method":"POST","url":"/v1/completions","body":{"prompt":"Hello","max_tokens":2,"seed":1}}` + "\n" +
	`{"custom_id":"b","method":"POST","url":"/v1/completions","body":{"prompt":"World","max_tokens":2,"seed":2}}` + "\n"

func setupPaths(t *testing.T) *pathsBundle {
	t.Helper()
	base := t.TempDir()
	b := &pathsBundle{dir: filepath.Join(base, "data"), outside: filepath.Join(base, "outside")}
	mkdir := func(p string) {
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := func(target, name string) {
		if err := os.Symlink(target, filepath.Join(b.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	real := filepath.Join(b.dir, "real")
	mkdir(real)
	mkdir(b.outside)
	var csv bytes.Buffer
	if err := recsys.WriteSynthCSV(&csv, recsys.SynthConfig{Users: 30, Items: 20, Interactions: 300, Groups: 3, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	// The same readable content inside and outside, so that only the
	// confinement can tell the two apart.
	for _, d := range []string{real, b.outside} {
		write(filepath.Join(d, "prompts.jsonl"), testPrompts)
		write(filepath.Join(d, "text.txt"), strings.Repeat("The quick brown fox jumps over the lazy dog. ", 20))
		write(filepath.Join(d, "interactions.csv"), csv.String())
	}
	// A model small enough to save and load in a blink, with GPT-2's
	// vocabulary so that generation can run on it.
	m, err := model.New(model.Config{NLayer: 1, NHead: 1, NEmbd: 8, NPositions: 32, VocabSize: 50257, LayerNormEpsilon: 1e-5}, 3)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{real, b.outside} {
		if err := m.SaveDir(filepath.Join(d, "model")); err != nil {
			t.Fatal(err)
		}
	}
	link(filepath.Join(b.outside, "prompts.jsonl"), "out-prompts.jsonl") // file, absolute, out
	link("../outside/text.txt", "out-text.txt")                          // file, relative, out
	link("../outside/interactions.csv", "out-interactions.csv")
	link("../outside", "out-dir")                  // directory, relative, out
	link(b.outside, "out-dir-abs")                 // directory, absolute, out
	link("real", "in-dir")                         // directory, inside
	link("real/prompts.jsonl", "in-prompts.jsonl") // file, inside
	b.before = snapshot(t, b.outside)
	b.deps = rootedDeps(t, b.dir)
	b.reg = pipeline.NewRegistry()
	RegisterAll(b.reg, b.deps)
	return b
}

// snapshot maps every file under dir to its content.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		out[p] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (b *pathsBundle) outsideUntouched(t *testing.T) {
	t.Helper()
	now := snapshot(t, b.outside)
	if len(now) != len(b.before) {
		t.Fatalf("the directory outside the root has %d files, had %d", len(now), len(b.before))
	}
	for p, s := range b.before {
		if now[p] != s {
			t.Fatalf("%s outside the root was changed", p)
		}
	}
}

// run runs one job the way a worker does (decode, Validate, Work) without
// Redis.
func (b *pathsBundle) run(t *testing.T, kind string, args map[string]any) error {
	t.Helper()
	payload, err := json.Marshal(args)
	if err != nil {
		t.Fatal(err)
	}
	return b.reg.Exec(context.Background(), kind, payload)
}

// wantEscape: refused, permanent, and the message names the field and the
// path, and no server directory the client did not give.
func (b *pathsBundle) wantEscape(t *testing.T, what, field, p string, err error) {
	t.Helper()
	prefix := `field "` + field + `": path "` + p + `" escapes the data root`
	if err == nil || !pipeline.IsPermanent(err) || !strings.Contains(err.Error(), prefix) {
		t.Fatalf("%s with %s %q: error %v (permanent %v); want a permanent error containing %q", what, field, p, err, pipeline.IsPermanent(err), prefix)
	}
	// The message reaches API clients: it names no server directory.
	if !strings.Contains(p, b.dir) && strings.Contains(err.Error(), b.dir) {
		t.Fatalf("%s with %s %q: %v; names the root %s", what, field, p, err, b.dir)
	}
}

// escapes lists ways of naming file in the outside directory: by "..", by
// its absolute path, through a link to it (when link is set) and through
// links to the outside directory.
func (b *pathsBundle) escapes(file, link string) []string {
	out := []string{"../outside/" + file, filepath.Join(b.outside, file), "out-dir/" + file, "out-dir-abs/" + file, "real/../../outside/" + file}
	if link != "" {
		out = append(out, link)
	}
	return out
}

func TestJobReadsAreConfined(t *testing.T) {
	b := setupPaths(t)
	cases := []struct {
		kind, field string
		args        func(p string) map[string]any
		escapes     []string
	}{
		{KindGenerate, "input", func(p string) map[string]any {
			return map[string]any{"model": "builtin:tiny", "input": p, "output": "gen/out.jsonl"}
		}, b.escapes("prompts.jsonl", "out-prompts.jsonl")},
		{KindGenerate, "model", func(p string) map[string]any {
			return map[string]any{"model": p, "input": "real/prompts.jsonl", "output": "gen/out.jsonl"}
		}, b.escapes("model", "")},
		{KindEval, "input", func(p string) map[string]any {
			return map[string]any{"model": "builtin:tiny", "input": p}
		}, b.escapes("text.txt", "out-text.txt")},
		{KindEval, "model", func(p string) map[string]any {
			return map[string]any{"model": p, "input": "real/text.txt"}
		}, b.escapes("model", "")},
		{KindRecsRebuild, "interactions", func(p string) map[string]any {
			return map[string]any{"interactions": p, "out": "recs/out.jsonl"}
		}, b.escapes("interactions.csv", "out-interactions.csv")},
		{KindFinetune, "data", func(p string) map[string]any {
			return map[string]any{"model": "builtin:tiny", "data": p, "out": "ft/run"}
		}, b.escapes("text.txt", "out-text.txt")},
		{KindFinetune, "model", func(p string) map[string]any {
			return map[string]any{"model": p, "data": "real/text.txt", "out": "ft/run"}
		}, b.escapes("model", "")},
	}
	for _, c := range cases {
		for _, p := range c.escapes {
			err := b.run(t, c.kind, c.args(p))
			if c.field == "model" {
				// A model outside the root is one more model that is not
				// there: one answer for all, so the root cannot be probed.
				// A path that climbs out ("..") is refused by its spelling.
				notFound, escapes := `model "`+p+`": not found`, `field "model": path "`+p+`" escapes the data root`
				if err == nil || !pipeline.IsPermanent(err) || !(strings.Contains(err.Error(), notFound) || strings.Contains(err.Error(), escapes)) {
					t.Fatalf("%s with model %q: error %v; want a permanent %q or %q", c.kind, p, err, notFound, escapes)
				}
				continue
			}
			b.wantEscape(t, c.kind, c.field, p, err)
		}
	}
	// Nothing was written for the refused jobs either.
	for _, p := range []string{"gen", "recs", "ft"} {
		if _, err := os.Stat(filepath.Join(b.dir, p)); !os.IsNotExist(err) {
			t.Errorf("a refused job left %s in the root: %v", p, err)
		}
	}
	// recs-eval is `worker exec` only.
	for _, p := range b.escapes("interactions.csv", "out-interactions.csv") {
		err := Exec(context.Background(), b.deps, KindRecsEval, []string{"--interactions", p}, new(bytes.Buffer))
		b.wantEscape(t, "recs-eval", "interactions", p, err)
	}
	b.outsideUntouched(t)
}

func TestJobWritesAreConfined(t *testing.T) {
	b := setupPaths(t)
	writes := func(file string) []string {
		// Links at the last step are replaced, not followed, by atomic
		// writes (TestJobWritesThroughLinksInside); new files and
		// directories under links pointing out are refused.
		return append(b.escapes(file, ""), "out-dir/newdir/"+file, "out-dir-abs/newdir/"+file)
	}
	cases := []struct {
		kind, field string
		args        func(p string) map[string]any
	}{
		{KindGenerate, "output", func(p string) map[string]any {
			return map[string]any{"model": "builtin:tiny", "input": "real/prompts.jsonl", "output": p}
		}},
		{KindRecsRebuild, "out", func(p string) map[string]any {
			return map[string]any{"interactions": "real/interactions.csv", "out": p}
		}},
		{KindFinetune, "out", func(p string) map[string]any {
			return map[string]any{"model": "builtin:tiny", "data": "real/text.txt", "out": p}
		}},
		{KindPing, "record", func(p string) map[string]any {
			return map[string]any{"record": p}
		}},
	}
	for _, c := range cases {
		for _, p := range writes("new-" + c.field) {
			b.wantEscape(t, c.kind, c.field, p, b.run(t, c.kind, c.args(p)))
		}
	}
	// An append follows a link at the last step, so one pointing out is
	// refused.
	b.wantEscape(t, KindPing, "record", "out-prompts.jsonl", b.run(t, KindPing, map[string]any{"record": "out-prompts.jsonl"}))
	// `worker exec` takes the same paths through flags.
	for _, p := range writes("exec.jsonl") {
		err := Exec(context.Background(), b.deps, KindGenerate, []string{"--in", "real/prompts.jsonl", "--out", p}, new(bytes.Buffer))
		b.wantEscape(t, "worker exec generate", "output", p, err)
	}
	b.outsideUntouched(t)
}

// Paths inside the root work in every spelling: relative, absolute, and
// through links that stay inside, for reading and for writing.
func TestJobWritesThroughLinksInside(t *testing.T) {
	b := setupPaths(t)
	ok := func(kind string, args map[string]any) {
		t.Helper()
		if err := b.run(t, kind, args); err != nil {
			t.Fatalf("%s %v: %v", kind, args, err)
		}
	}
	ok(KindGenerate, map[string]any{"model": "builtin:tiny", "input": "in-prompts.jsonl", "output": "in-dir/gen/a.jsonl"})
	ok(KindGenerate, map[string]any{"model": "in-dir/model", "input": filepath.Join(b.dir, "in-dir", "prompts.jsonl"), "output": filepath.Join(b.dir, "gen", "b.jsonl")})
	for _, p := range []string{filepath.Join(b.dir, "real", "gen", "a.jsonl"), filepath.Join(b.dir, "gen", "b.jsonl")} {
		data, err := os.ReadFile(p)
		if err != nil || bytes.Count(data, []byte("\n")) != 2 {
			t.Fatalf("%s: %d lines, %v; want two responses", p, bytes.Count(data, []byte("\n")), err)
		}
	}
	ok(KindEval, map[string]any{"model": filepath.Join(b.dir, "real", "model"), "input": "in-dir/text.txt"})
	ok(KindRecsRebuild, map[string]any{"interactions": filepath.Join(b.dir, "in-dir", "interactions.csv"), "out": "in-dir/recs.jsonl"})
	ok(KindPing, map[string]any{"record": "in-dir/runs/ping.txt"})
	ok(KindPing, map[string]any{"record": "in-dir/runs/ping.txt"})
	if data, _ := os.ReadFile(filepath.Join(b.dir, "real", "runs", "ping.txt")); string(data) != "0\n0\n" {
		t.Fatalf("ping record holds %q; want two runs appended", data)
	}
	if _, err := os.Stat(filepath.Join(b.dir, "real", "recs.jsonl")); err != nil {
		t.Fatal(err)
	}
	// An output named by a link that points out replaces the link with a
	// file in the root; the target outside is not written.
	ok(KindGenerate, map[string]any{"model": "builtin:tiny", "input": "real/prompts.jsonl", "output": "out-prompts.jsonl"})
	if st, err := os.Lstat(filepath.Join(b.dir, "out-prompts.jsonl")); err != nil || !st.Mode().IsRegular() {
		t.Fatalf("out-prompts.jsonl after the write: %v, %v; want a regular file", st, err)
	}
	// `worker exec` output reports where the file went.
	var stdout bytes.Buffer
	if err := Exec(context.Background(), b.deps, KindGenerate, []string{"--in", "in-prompts.jsonl", "--out", "exec/out.jsonl"}, &stdout); err != nil {
		t.Fatal(err)
	}
	var sum GenerateSummary
	if err := json.Unmarshal(stdout.Bytes(), &sum); err != nil || sum.Output != filepath.Join(b.dir, "exec", "out.jsonl") || sum.Completed != 2 {
		t.Fatalf("summary %s (%v)", stdout.String(), err)
	}
	b.outsideUntouched(t)
}

// A missing input is permanent and names the field; the producer's check
// (Validate) refuses what no root would accept before anything is enqueued.
func TestPathErrorsNameTheField(t *testing.T) {
	b := setupPaths(t)
	err := b.run(t, KindGenerate, map[string]any{"model": "builtin:tiny", "input": "real/missing.jsonl", "output": "x.jsonl"})
	want := `field "input": open "real/missing.jsonl": no such file or directory`
	if err == nil || !pipeline.IsPermanent(err) || err.Error() != want {
		t.Fatalf("missing input: %v; want %q, permanent", err, want)
	}
	for _, c := range []struct{ kind, payload, field string }{
		{KindGenerate, `{"model":"builtin:tiny","input":"../in.jsonl","output":"o.jsonl"}`, "input"},
		{KindGenerate, `{"model":"builtin:tiny","input":"in.jsonl","output":"a/../../o.jsonl"}`, "output"},
		{KindGenerate, `{"model":"../m","input":"in.jsonl","output":"o.jsonl"}`, "model"},
		{KindEval, `{"model":"builtin:tiny","input":".."}`, "input"},
		{KindFinetune, `{"model":"builtin:tiny","data":"../d.txt"}`, "data"},
		{KindFinetune, `{"model":"builtin:tiny","data":"d.txt","out":"../run"}`, "out"},
		{KindRecsRebuild, `{"interactions":"../i.csv","publish":true}`, "interactions"},
		{KindRecsRebuild, `{"interactions":"i.csv","out":"../o.jsonl"}`, "out"},
		{KindPing, `{"record":"../r.txt"}`, "record"},
	} {
		err := ValidatePayload(c.kind, []byte(c.payload))
		if err == nil || !strings.Contains(err.Error(), `field "`+c.field+`"`) || !dataroot.IsEscape(err) {
			t.Errorf("ValidatePayload(%s, %s) = %v; want an escape naming %q", c.kind, c.payload, err, c.field)
		}
	}
}

// A registration record over its limit is refused, naming the field, not
// trusted or re-registered over.
func TestRunMarkerLimit(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "run"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "run", registeredFile), make([]byte, limits.RunMarkerBytes+1), 0o644); err != nil {
		t.Fatal(err)
	}
	root, err := rootedDeps(t, dir).DataRoot()
	if err != nil {
		t.Fatal(err)
	}
	_, err = registerRun(context.Background(), nil, root, "run", FinetuneArgs{Register: "m"}, &finetune.Result{}, "scratch")
	if err == nil || !pipeline.IsPermanent(err) || !strings.Contains(err.Error(), `field "out"`) || !strings.Contains(err.Error(), "larger than the limit") {
		t.Fatalf("registerRun with an oversized marker: %v", err)
	}
}
