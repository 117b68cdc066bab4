package generation

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tandem-ai/tandem/dataroot"
	"github.com/tandem-ai/tandem/dataroot/dataroottest"
	"github.com/tandem-ai/tandem/model"
)

// smallModel is a model of about n float32 parameters' worth of vocabulary.
func smallModel(t *testing.T, vocab int) *model.Model {
	t.Helper()
	m, err := model.New(model.Config{NLayer: 1, NHead: 1, NEmbd: 8, NPositions: 8, VocabSize: vocab, LayerNormEpsilon: 1e-5}, 1)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestModelStoreLRU(t *testing.T) {
	one := int64(len(smallModel(t, 64).Params)) * 4
	s := NewModelStoreWith(StoreConfig{Limit: 2*one + one/2}) // room for two
	dataroottest.Install(t, s, t.TempDir())
	var loads atomic.Int32
	s.load = func(string) (*model.Model, error) {
		loads.Add(1)
		return smallModel(t, 64), nil
	}
	get := func(name string) *LoadedModel {
		t.Helper()
		lm, err := s.Get(name)
		if err != nil {
			t.Fatal(err)
		}
		return lm
	}
	a := get("models/a")
	get("models/b")
	if get("models/a") != a || loads.Load() != 2 {
		t.Fatalf("a second Get loaded again (%d loads)", loads.Load())
	}
	get("models/c") // evicts b, the least recently used
	if st := s.Stats(); st.Models != 2 || st.Evictions != 1 || st.Bytes > st.Limit {
		t.Fatalf("stats after the third model: %+v", st)
	}
	if get("models/a") != a {
		t.Fatal("a was evicted though it was used more recently than b")
	}
	get("models/b")
	if loads.Load() != 4 {
		t.Fatalf("b was not reloaded after its eviction (%d loads)", loads.Load())
	}
	// A job still decoding on a model that leaves the store finishes.
	done := make(chan error, 1)
	go func() {
		_, err := a.Engine.Generate(context.Background(), []model.Request{{Prompt: []int32{1, 2}, Params: model.SamplingParams{MaxTokens: 8, IgnoreEOS: true}}}, Options{})
		done <- err
	}()
	get("models/c")
	get("models/d")
	if err := <-done; err != nil {
		t.Fatalf("generation on the evicted model: %v", err)
	}
}

func TestModelStoreKeepsOneOverLimit(t *testing.T) {
	s := NewModelStoreWith(StoreConfig{Limit: 1})
	dataroottest.Install(t, s, t.TempDir())
	s.load = func(string) (*model.Model, error) { return smallModel(t, 64), nil }
	if _, err := s.Get("models/big"); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Models != 1 {
		t.Fatalf("the only model was evicted: %+v", st)
	}
}

func TestModelStoreSharesOneLoad(t *testing.T) {
	s := NewModelStore(nil)
	dataroottest.Install(t, s, t.TempDir())
	var loads atomic.Int32
	release := make(chan struct{})
	s.load = func(string) (*model.Model, error) {
		loads.Add(1)
		<-release
		return smallModel(t, 32), nil
	}
	var wg sync.WaitGroup
	got := make([]*LoadedModel, 8)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], _ = s.Get("models/shared")
		}()
	}
	close(release)
	wg.Wait()
	for _, lm := range got {
		if lm == nil || lm != got[0] {
			t.Fatal("concurrent Gets returned different models")
		}
	}
	if loads.Load() != 1 {
		t.Fatalf("%d loads for one name; want 1", loads.Load())
	}
}

func TestModelStoreFailedLoadIsRetried(t *testing.T) {
	s := NewModelStore(nil)
	dataroottest.Install(t, s, t.TempDir())
	fail := true
	s.load = func(string) (*model.Model, error) {
		if fail {
			return nil, errors.New("disk on fire")
		}
		return smallModel(t, 32), nil
	}
	if _, err := s.Get("models/x"); err == nil {
		t.Fatal("failed load returned no error")
	}
	fail = false
	if _, err := s.Get("models/x"); err != nil {
		t.Fatalf("second Get after a failure: %v", err)
	}
	if _, err := s.Get("builtin:nope"); err == nil {
		t.Fatal("unknown builtin accepted")
	}
}

func TestModelCacheBytesFromEnv(t *testing.T) {
	for v, want := range map[string]int64{"": DefaultModelCacheBytes, "0": 0, "1024": 1024, "2GiB": 2 << 30, "512M": 512 << 20, " 3K ": 3 << 10} {
		t.Setenv(EnvModelCacheBytes, v)
		got, err := ModelCacheBytesFromEnv()
		if err != nil || got != want {
			t.Errorf("%q: %d, %v; want %d", v, got, err, want)
		}
	}
	for _, v := range []string{"-1", "lots", "1.5G", "99999999999G"} {
		t.Setenv(EnvModelCacheBytes, v)
		if _, err := ModelCacheBytesFromEnv(); err == nil {
			t.Errorf("%q accepted", v)
		}
	}
}

// Every way a model directory can be missing gets the same answer, so a
// client cannot tell a file from a directory from nothing in the data root
// by asking for models (issue 22).
func TestModelNotFoundIsOneAnswer(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "empty-dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "a-file"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "fifo-model"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo-model", model.ConfigFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(t.TempDir(), filepath.Join(dir, "link-out")); err != nil {
		t.Fatal(err)
	}
	root, err := dataroot.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	s := NewModelStore(nil)
	s.SetDataRoot(root)
	for _, name := range []string{"nothing-here", "empty-dir", "a-file", "fifo-model", "link-out", "a-file/below"} {
		done := make(chan error, 1)
		go func() { _, err := s.Get(name); done <- err }()
		var err error
		select {
		case err = <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("Get(%q) still waits after 10 s", name)
		}
		want := fmt.Sprintf("model %q: not found", name)
		if !errors.Is(err, ErrModelNotFound) || err.Error() != want {
			t.Errorf("Get(%q): %v; want %q", name, err, want)
		}
	}
}
