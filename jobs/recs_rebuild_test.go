package jobs

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/recsys"
)

// writeSynth writes a synthetic interaction log into dir.
func writeSynth(t *testing.T, dir string, c recsys.SynthConfig) string {
	t.Helper()
	path := filepath.Join(dir, "interactions.csv")
	var buf bytes.Buffer
	if err := recsys.WriteSynthCSV(&buf, c); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestExecRecsRebuildOutput(t *testing.T) {
	sc := recsys.SynthConfig{Users: 80, Items: 50, Interactions: 1200, Groups: 4, Noise: 0.1, Rejections: 0.3, Seed: 7}
	dir := t.TempDir()
	in := writeSynth(t, dir, sc)
	events, err := recsys.SynthEvents(sc)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]map[string]bool{}
	for _, ev := range events {
		if seen[ev.User] == nil {
			seen[ev.User] = map[string]bool{}
		}
		seen[ev.User][ev.Item] = true
	}
	for _, mode := range []string{RecsModeUser, RecsModeItem} {
		t.Run(mode, func(t *testing.T) {
			out := filepath.Join(dir, mode, "recs.jsonl")
			var stdout bytes.Buffer
			err := Exec(context.Background(), rootedDeps(t, dir), KindRecsRebuild,
				[]string{"--interactions", in, "--out", out, "--mode", mode, "--neighbors", "10", "--top", "7"}, &stdout)
			if err != nil {
				t.Fatal(err)
			}
			var res RecsRebuildResult
			if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
				t.Fatalf("stdout %q: %v", stdout.String(), err)
			}
			f, err := os.Open(out)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			users := map[string]bool{}
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				var line recsys.RecLine
				dec := json.NewDecoder(strings.NewReader(sc.Text()))
				dec.DisallowUnknownFields()
				if err := dec.Decode(&line); err != nil {
					t.Fatalf("line %q: %v", sc.Text(), err)
				}
				if users[line.User] {
					t.Fatalf("user %s twice", line.User)
				}
				users[line.User] = true
				if len(line.Items) > 7 {
					t.Fatalf("user %s: %d items, want at most 7", line.User, len(line.Items))
				}
				for i, it := range line.Items {
					if seen[line.User][it.Item] {
						t.Fatalf("user %s: recommended seen item %s", line.User, it.Item)
					}
					if i > 0 && it.Score > line.Items[i-1].Score {
						t.Fatalf("user %s: scores not descending: %v", line.User, line.Items)
					}
				}
			}
			if err := sc.Err(); err != nil {
				t.Fatal(err)
			}
			if len(users) != len(seen) || res.Lines != len(seen) || res.Users != len(seen) {
				t.Fatalf("%d lines, result %+v, want %d users", len(users), res, len(seen))
			}
		})
	}
}

func TestRecsRebuildBadInputIsPermanent(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.csv")
	if err := os.WriteFile(bad, []byte("user,item,event,value,ts,kind\nu1,i1,click,1,,\nu2,,click,1,,\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	w := RecsRebuildWorker{Deps: rootedDeps(t, dir)}
	for _, path := range []string{bad, filepath.Join(dir, "missing.csv")} {
		_, err := w.run(context.Background(), RecsRebuildArgs{Interactions: path, Out: filepath.Join(dir, "out.jsonl")})
		if err == nil || !pipeline.IsPermanent(err) {
			t.Fatalf("%s: %v, want a permanent error", path, err)
		}
		if path == bad && (!errors.Is(err, recsys.ErrBadInput) || !strings.Contains(err.Error(), "line 3")) {
			t.Fatalf("%s: %v, want ErrBadInput naming line 3", path, err)
		}
	}
	if err := (RecsRebuildArgs{Interactions: "x.csv"}).Validate(); err == nil {
		t.Fatal("args without out or publish validated")
	}
	if err := ValidatePayload(KindRecsRebuild, []byte(`{"interactions":"x.csv","publish":true,"mode":"sideways"}`)); err == nil {
		t.Fatal("mode sideways validated")
	}
}

func TestExecRecsEval(t *testing.T) {
	dir := t.TempDir()
	in := writeSynth(t, dir, recsys.SynthConfig{Users: 100, Items: 60, Interactions: 2000, Groups: 4, Noise: 0.05, Seed: 2})
	var stdout bytes.Buffer
	if err := Exec(context.Background(), rootedDeps(t, dir), KindRecsEval, []string{"--interactions", in, "--k", "5"}, &stdout); err != nil {
		t.Fatal(err)
	}
	var m recsys.Metrics
	if err := json.Unmarshal(stdout.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	// Planted taste groups: the model must beat chance (5 of 60 items).
	if m.K != 5 || m.Users == 0 || m.Precision <= 5.0/60 || m.Coverage <= 0 {
		t.Fatalf("metrics %+v", m)
	}
}
