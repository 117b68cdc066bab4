package finetune

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tandem-ai/tandem/model"
)

func TestBadDatasetsFailBeforeTraining(t *testing.T) {
	long := strings.Repeat("word ", MaxLineBytes/5+10)
	cases := []struct {
		name, file, content, want string
	}{
		{"empty", "e.txt", "", "empty"},
		{"blank", "b.txt", "\n  \n\n", "empty"},
		{"binary", "bin.txt", "fine line\nhas \x00 nul\n", "line 2 has a NUL byte"},
		{"invalid utf8", "u.txt", "ok\nok\n\xff\xfe bad\n", "line 3 is not valid UTF-8"},
		{"long line", "l.txt", "ok\n" + long + "\n", "line 2 is"},
		{"jsonl not json", "j.jsonl", `{"prompt":"a","completion":"b"}` + "\nnot json\n", "line 2"},
		{"jsonl no completion", "c.jsonl", `{"prompt":"a"}` + "\n", "line 1: completion"},
		{"jsonl unknown field", "f.jsonl", `{"prompt":"a","completion":"b","x":1}` + "\n", "line 1"},
		{"too few", "few.txt", "one\ntwo\n", "need at least 3"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, c.file)
			if err := os.WriteFile(path, []byte(c.content), 0o644); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(dir, "out")
			cfg := model.Config{NLayer: 1, NHead: 1, NEmbd: 8, NPositions: 16, VocabSize: 50257, LayerNormEpsilon: 1e-5}
			_, err := Run(context.Background(), Options{InitConfig: &cfg, Data: path, OutDir: out}, Hooks{
				OnStep: func(StepEvent) { t.Error("training started on a bad dataset") },
			})
			if !errors.Is(err, ErrBadDataset) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want ErrBadDataset containing %q", err, c.want)
			}
			if _, err := os.Stat(filepath.Join(out, CheckpointFile)); err == nil {
				t.Error("a checkpoint was written")
			}
		})
	}
}

func TestJSONLOnlyCompletionCounts(t *testing.T) {
	tok, err := model.NewTokenizer()
	if err != nil {
		t.Fatal(err)
	}
	ds, err := ParseDataset([]byte(`{"prompt":"Say hi:","completion":" hi"}`+"\n"), FormatJSONL, tok)
	if err != nil {
		t.Fatal(err)
	}
	ex := ds.Examples[0]
	np := len(tok.Encode("Say hi:"))
	for i, l := range ex.Loss {
		if l != (i >= np) {
			t.Fatalf("loss mask %v, prompt has %d tokens", ex.Loss, np)
		}
	}
	rows := PackRows(ds.Examples, 16)
	counted := countTargets(rows[0].Targets)
	if want := len(ex.Tokens) - np; counted != want {
		t.Fatalf("%d targets count, want the %d completion tokens (EOT included)", counted, want)
	}
}

func TestSplitIsSeeded(t *testing.T) {
	ex := make([]Example, 50)
	for i := range ex {
		ex[i] = Example{Tokens: []int32{int32(i)}}
	}
	a, _ := SplitExamples(ex, 0.1, 0.1, 3)
	b, _ := SplitExamples(ex, 0.1, 0.1, 3)
	c, _ := SplitExamples(ex, 0.1, 0.1, 4)
	if len(a.Train) != 40 || len(a.Dev) != 5 || len(a.Test) != 5 {
		t.Fatalf("sizes %d/%d/%d", len(a.Train), len(a.Dev), len(a.Test))
	}
	same := func(x, y []Example) bool {
		for i := range x {
			if x[i].Tokens[0] != y[i].Tokens[0] {
				return false
			}
		}
		return true
	}
	if !same(a.Dev, b.Dev) || !same(a.Train, b.Train) {
		t.Fatal("same seed, different split")
	}
	if same(a.Train, c.Train) {
		t.Fatal("another seed gave the same order")
	}
}

func TestCheckpointRoundTripAndDamage(t *testing.T) {
	path := filepath.Join(t.TempDir(), CheckpointFile)
	c := &Checkpoint{State: State{RunKey: "k", Epoch: 1, StepInEpoch: 2, RNG: []byte{1, 2}, StepLosses: []float32{3, 2}},
		Params: []float32{1, 2, 3}, Opt: model.AdamWState{M: []float32{4, 5, 6}, V: []float32{7, 8, 9}, Step: 5}}
	if err := SaveCheckpoint(path, c); err != nil {
		t.Fatal(err)
	}
	got, err := LoadCheckpoint(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.State.StepInEpoch != 2 || got.Opt.Step != 5 || got.Params[2] != 3 || got.Opt.V[0] != 7 || string(got.State.RNG) != "\x01\x02" {
		t.Fatalf("round trip: %+v", got)
	}
	b, _ := os.ReadFile(path)
	b[len(b)-10] ^= 0xff
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCheckpoint(path); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("damaged checkpoint: %v", err)
	}
	if _, err := LoadCheckpoint(path + ".none"); !errors.Is(err, ErrNoCheckpoint) {
		t.Fatalf("missing: %v", err)
	}
}

func TestCurvePNG(t *testing.T) {
	b, err := CurvePNG([]float32{5, 4, 3.5, 3, 2.8}, []EpochStats{{Epoch: 1, Step: 2, DevLoss: 4.2}, {Epoch: 2, Step: 5, DevLoss: 3.1}})
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 8 || string(b[1:4]) != "PNG" {
		t.Fatal("not a PNG")
	}
	if _, err := CurvePNG(nil, nil); err != nil {
		t.Fatal(err)
	}
}

// A checkpoint whose header claims more than maxHeaderBytes is refused
// before the header is read, even when the file is that large.
func TestCheckpointRefusesHugeHeader(t *testing.T) {
	path := filepath.Join(t.TempDir(), CheckpointFile)
	hdr := append([]byte(checkpointMagic), binary.LittleEndian.AppendUint32(nil, checkpointVersion)...)
	hdr = binary.LittleEndian.AppendUint64(hdr, maxHeaderBytes+1)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(hdr); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(maxHeaderBytes + 1<<20); err != nil { // sparse: no disk used
		t.Fatal(err)
	}
	f.Close()
	if _, err := LoadCheckpoint(path); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("header of %d bytes", maxHeaderBytes+1)) {
		t.Fatalf("LoadCheckpoint: %v; want the header's size refused", err)
	}
}
