package main

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/pipeline"
)

// TestJobPathFlagsResolveInTheDataRoot: `producer finetune` and `producer
// personalize` hand their path flags to the job as given, so the worker
// finds them relative to its data root, where the job reads them, not made
// absolute against the producer's current directory (which the worker then
// refused as outside the root). A path the worker would refuse is refused
// before anything is enqueued, naming the flag and the data root.
func TestJobPathFlagsResolveInTheDataRoot(t *testing.T) {
	e := newBatchEnv(t)
	root := t.TempDir()
	t.Setenv("TANDEM_DATA_ROOT", root)
	t.Setenv("TANDEM_DATA_DIR", filepath.Join(root, "state"))
	if err := os.WriteFile(filepath.Join(root, "corpus.txt"), []byte("one example\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, stderr, err := runProducer(t, "finetune", "--model", "builtin:tiny", "--data", "corpus.txt", "--out", "runs/a")
	if err != nil {
		t.Fatalf("finetune: %v\n%s", err, stderr)
	}
	var v TaskView
	var ft jobs.FinetuneArgs
	if err := json.Unmarshal([]byte(out), &v); err != nil || json.Unmarshal(v.Args, &ft) != nil || ft.Data != "corpus.txt" || ft.Out != "runs/a" {
		t.Fatalf("finetune enqueued %s (%v); want data and out as given", out, err)
	}
	// The worker's data root opens the file the flag named.
	cfg := e.cfg
	cfg.DataRoot, cfg.DataDir = root, filepath.Join(root, "state")
	workerRoot, err := jobs.OpenDataRoot(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer workerRoot.Close()
	f, err := workerRoot.Open("data", ft.Data)
	if err != nil {
		t.Fatalf("the worker cannot open the dataset the producer enqueued: %v", err)
	}
	b, _ := io.ReadAll(f)
	f.Close()
	if string(b) != "one example\n" {
		t.Fatalf("the worker reads %q", b)
	}

	out, stderr, err = runProducer(t, "personalize", "--users", "users.txt", "--catalog", "cat/catalog.jsonl", "--out", "p")
	var pa jobs.PersonalizeArgs
	if err != nil || json.Unmarshal([]byte(out), &v) != nil || json.Unmarshal(v.Args, &pa) != nil || pa.Users != "users.txt" || pa.Catalog != "cat/catalog.jsonl" || pa.Out != "p" {
		t.Fatalf("personalize enqueued %s, %v\n%s; want the paths as given", out, err, stderr)
	}

	elsewhere := filepath.Join(t.TempDir(), "corpus.txt")
	argsFile := filepath.Join(t.TempDir(), "generate.json")
	if err := os.WriteFile(argsFile, []byte(`{"model":"builtin:tiny","input":"`+elsewhere+`","output":"out.jsonl"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"finetune", "--model", "builtin:tiny", "--data", elsewhere, "--out", "runs/b"}, `--data: field "data": path "` + elsewhere + `" escapes the data root`},
		{[]string{"finetune", "--model", "builtin:tiny", "--data", "corpus.txt", "--out", "../runs"}, `--out: field "out": path "../runs" escapes the data root`},
		{[]string{"finetune", "--model", "builtin:tiny", "--data", "corpus.txt", "--out", "state/runs"}, `--out: field "out": path "state/runs" lies in the data dir`},
		{[]string{"personalize", "--catalog", "../catalog.jsonl", "--out", "p"}, `--catalog: field "catalog"`},
		{[]string{"enqueue", jobs.KindGenerate, "--args", argsFile}, `--args: field "input": path "` + elsewhere + `" escapes the data root`},
	} {
		_, _, err := runProducer(t, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "relative to the data root, "+root) || pipeline.ExitCode(err) != 1 {
			t.Errorf("producer %s: %v; want %s, and the data root", strings.Join(c.args, " "), err, c.want)
		}
	}
	if n, err := e.rdb.Keys(t.Context(), "asynq:{*}:t:*").Result(); err != nil || len(n) != 2 {
		t.Errorf("%d tasks enqueued (%v), want the 2 that passed", len(n), err)
	}
}
