package jobs

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/tandem-ai/tandem/internal/workerproc"

	"github.com/tandem-ai/tandem/finetune"
	"github.com/tandem-ai/tandem/model"
)

// TestFinetuneResumesAfterSIGKILL runs `worker exec finetune` as a child,
// kills it with SIGKILL after its first mid-epoch checkpoint, reruns the
// same command and checks that it resumed (not restarted) and ended with
// the weights of an uninterrupted run.
func TestFinetuneResumesAfterSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the worker and trains twice")
	}
	dir := t.TempDir()
	bin := workerproc.Build(t)
	data := filepath.Join(dir, "corpus.txt")
	if err := finetune.WriteSyntheticCorpus(data, finetune.FormatText, 150, 3); err != nil {
		t.Fatal(err)
	}
	cfg, err := model.MarshalConfig(model.Config{NLayer: 2, NHead: 2, NEmbd: 64, NPositions: 64, VocabSize: 50257, LayerNormEpsilon: 1e-5})
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "config.json")
	if err := os.WriteFile(cfgPath, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	args := func(out string) []string {
		return []string{"exec", "finetune", "--init-config", cfgPath, "--data", data, "--out", out,
			"--epochs", "3", "--batch", "8", "--seq", "32", "--lr", "3e-3", "--seed", "11", "--checkpoint-every", "2"}
	}
	env := append(os.Environ(), EnvDataRoot+"="+dir) // the paths are inside it
	run := func(out string) []map[string]float64 {
		t.Helper()
		cmd := exec.Command(bin, args(out)...)
		cmd.Env = env
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		stdout, err := cmd.Output()
		if err != nil {
			t.Fatalf("worker exec finetune: %v\n%s", err, stderr.String())
		}
		var lines []map[string]float64
		sc := bufio.NewScanner(bytes.NewReader(stdout))
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				t.Fatalf("output line %q: %v", sc.Text(), err)
			}
			nums := map[string]float64{}
			for k, v := range m {
				if f, ok := v.(float64); ok {
					nums[k] = f
				}
			}
			lines = append(lines, nums)
		}
		return lines
	}

	// Uninterrupted reference run.
	refOut := filepath.Join(dir, "ref")
	lines := run(refOut)
	if len(lines) != 4 {
		t.Fatalf("want 3 epoch lines and a final line, got %v", lines)
	}
	for i, l := range lines[:3] {
		for _, k := range []string{"epoch", "train_loss", "dev_loss", "dev_ppl"} {
			if _, ok := l[k]; !ok {
				t.Fatalf("epoch line %d lacks %s: %v", i, k, l)
			}
		}
	}
	if _, ok := lines[3]["test_ppl"]; !ok {
		t.Fatalf("final line %v", lines[3])
	}

	// Interrupted run: SIGKILL once a mid-run checkpoint exists.
	out := filepath.Join(dir, "killed")
	cmd := exec.Command(bin, args(out)...)
	cmd.Env = env
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ckPath := filepath.Join(out, finetune.CheckpointFile)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if _, err := os.Stat(ckPath); err == nil {
			break
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			t.Fatal("no checkpoint appeared")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	ck, err := finetune.LoadCheckpoint(ckPath)
	if err != nil {
		t.Fatal(err)
	}
	if ck.State.Done || ck.Opt.Step == 0 {
		t.Fatalf("the kill came too late to test a resume: done=%v step=%d", ck.State.Done, ck.Opt.Step)
	}
	if _, err := os.Stat(filepath.Join(out, model.SafetensorsFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a killed run left a final model: %v", err)
	}
	killedAt := ck.Opt.Step

	run(out)
	res := readResultFile(t, filepath.Join(out, finetune.ResultFile))
	if res.ResumedAt != killedAt || res.ResumedAt == 0 {
		t.Fatalf("resumed at step %d, checkpoint was at %d", res.ResumedAt, killedAt)
	}
	want, err := model.LoadDir(refOut)
	if err != nil {
		t.Fatal(err)
	}
	got, err := model.LoadDir(out)
	if err != nil {
		t.Fatal(err)
	}
	const tol = 1e-5
	for i := range want.Params {
		if d := want.Params[i] - got.Params[i]; d > tol || d < -tol {
			t.Fatalf("param %d: resumed %g, uninterrupted %g", i, got.Params[i], want.Params[i])
		}
	}
	ref := readResultFile(t, filepath.Join(refOut, finetune.ResultFile))
	if ref.Steps != res.Steps || len(res.Epochs) != 3 {
		t.Fatalf("steps %d vs %d, epochs %d", ref.Steps, res.Steps, len(res.Epochs))
	}
}

func readResultFile(t *testing.T, path string) finetune.Result {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var r finetune.Result
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return r
}
