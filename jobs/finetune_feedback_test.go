package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tandem-ai/tandem/feedback"
	"github.com/tandem-ai/tandem/finetune"
	"github.com/tandem-ai/tandem/model"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/registry"
)

// finetuneTestDB is the Redis database of the fine-tuning tests. Several
// packages use it at once, so nobody flushes it: each test deletes the keys
// of its own uniquely named model.
const finetuneTestDB = 8

func finetuneTestRedis(t *testing.T) redis.UniversalClient {
	t.Helper()
	addr := os.Getenv("TANDEM_TEST_REDIS_ADDR")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr, DB: finetuneTestDB})
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("redis at %s: %v", addr, err)
	}
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

func cleanupModelKeys(t *testing.T, rdb redis.UniversalClient, name string) {
	t.Cleanup(func() {
		ctx := context.Background()
		keys, _ := rdb.Keys(ctx, pipeline.ModelKeyPrefix+name+":*").Result()
		keys = append(keys, pipeline.Key("finetune", "feedback", name, "samples"), pipeline.Key("finetune", "feedback", name, "trained"))
		rdb.Del(ctx, keys...)
		rdb.SRem(ctx, pipeline.ModelKeyPrefix+"names", name)
	})
}

func TestFeedbackCollectorDedupes(t *testing.T) {
	ctx := context.Background()
	rdb := finetuneTestRedis(t)
	name := fmt.Sprintf("collect-%d", time.Now().UnixNano())
	cleanupModelKeys(t, rdb, name)
	col, err := finetune.NewFeedbackCollector(rdb, name)
	if err != nil {
		t.Fatal(err)
	}
	add := func(ev feedback.Event) bool {
		t.Helper()
		ok, err := col.Collect(ctx, ev)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !add(feedback.Event{GenerationID: "g1", Action: "accept", Prompt: "p", Completion: " one"}) {
		t.Fatal("first accept not added")
	}
	if add(feedback.Event{GenerationID: "g1", Action: "accept", Prompt: "p", Completion: " one"}) {
		t.Fatal("redelivered accept added twice")
	}
	add(feedback.Event{GenerationID: "g1", Action: "edit", Prompt: "p", Completion: " one", EditedText: " uno"})
	add(feedback.Event{GenerationID: "g0", Action: "edit", Prompt: "q", Completion: " x", EditedText: " two"})
	// Ratings never reach the dataset, first ones or revisions (the
	// scheduler hands over accepts and edits only; the collector refuses
	// the rest).
	for _, body := range []string{
		`{"id":"fb-rate-g2","generation_id":"g2","action":"rate","event":"rating","value":2,"prompt":"p","completion":" two"}`,
		`{"id":"fb-rate-g2.r1","generation_id":"g2","action":"rate","event":"rating","value":5,"previous":2,"revision":1,"prompt":"p","completion":" two"}`,
	} {
		var ev feedback.Event
		if err := json.Unmarshal([]byte(body), &ev); err != nil {
			t.Fatal(err)
		}
		if _, err := col.Collect(ctx, ev); !errors.Is(err, finetune.ErrIgnored) {
			t.Fatalf("a rating %s: %v", body, err)
		}
	}
	if _, err := col.Collect(ctx, feedback.Event{GenerationID: "g3", Action: "edit", Completion: "x"}); err == nil {
		t.Fatal("an edit without edited_text was accepted")
	}
	for model, want := range map[string]string{"writer@3": "writer", "writer": "writer", "builtin:tiny": finetune.DefaultCollection, "": finetune.DefaultCollection} {
		if got := finetune.Collection(model); got != want {
			t.Errorf("collection of %q: %q, want %q", model, got, want)
		}
	}
	path := filepath.Join(t.TempDir(), "fb.jsonl")
	n, _, err := col.Export(ctx, path)
	if err != nil || n != 2 {
		t.Fatalf("export: %d %v", n, err)
	}
	b, _ := os.ReadFile(path)
	want := `{"prompt":"q","completion":" two"}` + "\n" + `{"prompt":"p","completion":" uno"}` + "\n"
	if string(b) != want {
		t.Fatalf("export:\n%s\nwant\n%s", b, want)
	}
}

// TestFeedbackFinetunePromotesWhenNoWorse trains a registered model on
// collected feedback and checks that the better version is promoted, that
// the next resolution of the name sees it, and that a run without new
// samples does nothing.
func TestFeedbackFinetunePromotesWhenNoWorse(t *testing.T) {
	ctx := context.Background()
	rdb := finetuneTestRedis(t)
	tmp := t.TempDir()
	reg := registry.New(rdb, filepath.Join(tmp, "registry"))
	name := fmt.Sprintf("feedback-%d", time.Now().UnixNano())
	cleanupModelKeys(t, rdb, name)

	base, err := model.New(model.Config{NLayer: 2, NHead: 2, NEmbd: 64, NPositions: 64, VocabSize: 50257, LayerNormEpsilon: 1e-5}, 5)
	if err != nil {
		t.Fatal(err)
	}
	baseDir := filepath.Join(tmp, "base")
	if err := base.SaveDir(baseDir); err != nil {
		t.Fatal(err)
	}
	v1, err := reg.Register(ctx, name, baseDir, registry.Version{Parent: "scratch"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Promote(ctx, name, v1.Version); err != nil {
		t.Fatal(err)
	}

	col, _ := finetune.NewFeedbackCollector(rdb, name)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 40; i++ {
		s := finetune.SyntheticSentence(rng)
		cut := strings.Index(s, " near ")
		ev := feedback.Event{GenerationID: fmt.Sprintf("gen-%03d", i), Action: feedback.ActionAccept, Prompt: s[:cut], Completion: s[cut:]}
		if i%4 == 0 {
			ev.Action, ev.EditedText = feedback.ActionEdit, s[cut:]
			ev.Completion = " something else"
		}
		if _, err := col.Collect(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	epochs := 2
	if raceBuild {
		epochs = 1
	}
	args := FinetuneFeedbackArgs{Model: name, MinSamples: 10, Epochs: epochs, BatchSize: 4, SeqLen: 32, LR: 3e-3, Seed: 1}
	if err := args.Validate(); err != nil {
		t.Fatal(err)
	}
	w := FinetuneFeedbackWorker{Deps: &Deps{Redis: rdb, Registry: reg, DataDir: tmp}}
	res, err := w.run(ctx, "fb-run-1", args)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", res)
	if !res.Promoted || res.Version != name+"@2" || res.Base != name+"@1" || !(res.NewDevLoss <= res.BaseDevLoss) {
		t.Fatalf("result %+v", res)
	}
	dir, ok, err := reg.Resolve(ctx, name)
	if err != nil || !ok {
		t.Fatalf("resolve: %v %v", ok, err)
	}
	v2, _ := reg.Get(ctx, name, 2)
	if dir != v2.Artifact {
		t.Fatalf("name resolves to %s, want the promoted %s", dir, v2.Artifact)
	}
	if _, err := model.LoadDir(dir); err != nil {
		t.Fatal(err)
	}
	again, err := w.run(ctx, "fb-run-2", args)
	if err != nil || again.Skipped == "" || again.Promoted {
		t.Fatalf("second run without new samples: %+v %v", again, err)
	}
}
