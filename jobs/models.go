package jobs

import (
	"fmt"
	"path/filepath"
	"strings"
	"sync"

	"github.com/tandem-ai/tandem/model"
)

// BuiltinPrefix names models that need no files: a seeded random-weights
// GPT-2 of a fixed small shape. They let `make demo`, tests and laptops run
// the whole pipeline before anyone has trained or downloaded a checkpoint.
const BuiltinPrefix = "builtin:"

// builtinConfigs are the shapes behind the builtin names. All use the full
// GPT-2 vocabulary so that the real r50k_base tokenizer applies.
var builtinConfigs = map[string]model.Config{
	"tiny":  {NLayer: 2, NHead: 2, NEmbd: 64, NPositions: 256, VocabSize: 50257, LayerNormEpsilon: 1e-5},
	"small": {NLayer: 4, NHead: 4, NEmbd: 128, NPositions: 512, VocabSize: 50257, LayerNormEpsilon: 1e-5},
}

// builtinSeed makes builtin weights identical on every worker, so outputs do
// not depend on which replica ran a chunk.
const builtinSeed = 1

// LoadedModel is a model plus the lock that serialises its use: the engine
// keeps scratch buffers inside the model, so one job at a time decodes on it.
type LoadedModel struct {
	Name  string
	Model *model.Model
	mu    sync.Mutex
}

// Lock takes the model for one job.
func (l *LoadedModel) Lock() { l.mu.Lock() }

// Unlock releases it.
func (l *LoadedModel) Unlock() { l.mu.Unlock() }

// ModelStore loads models once per worker and keeps them. It resolves
// builtin names and model directories (Hugging Face GPT-2 layout).
type ModelStore struct {
	mu     sync.Mutex
	loaded map[string]*LoadedModel
	tok    *model.Tokenizer
	tokErr error
	tokOne sync.Once
}

// NewModelStore returns an empty store.
func NewModelStore() *ModelStore {
	return &ModelStore{loaded: map[string]*LoadedModel{}}
}

// Tokenizer returns the shared GPT-2 tokenizer (loaded offline, once).
func (s *ModelStore) Tokenizer() (*model.Tokenizer, error) {
	s.tokOne.Do(func() { s.tok, s.tokErr = model.NewTokenizer() })
	return s.tok, s.tokErr
}

// Get returns the named model, loading it on first use.
func (s *ModelStore) Get(name string) (*LoadedModel, error) {
	key, err := canonicalModelName(name)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if lm, ok := s.loaded[key]; ok {
		return lm, nil
	}
	var m *model.Model
	if strings.HasPrefix(key, BuiltinPrefix) {
		cfg := builtinConfigs[strings.TrimPrefix(key, BuiltinPrefix)]
		m, err = model.New(cfg, builtinSeed)
	} else {
		m, err = model.LoadDir(key)
	}
	if err != nil {
		return nil, fmt.Errorf("model %q: %w", name, err)
	}
	lm := &LoadedModel{Name: name, Model: m}
	s.loaded[key] = lm
	return lm, nil
}

func canonicalModelName(name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("model: required (a directory or %stiny)", BuiltinPrefix)
	}
	if strings.HasPrefix(name, BuiltinPrefix) {
		if _, ok := builtinConfigs[strings.TrimPrefix(name, BuiltinPrefix)]; !ok {
			return "", fmt.Errorf("model: unknown builtin %q (have %stiny, %ssmall)", name, BuiltinPrefix, BuiltinPrefix)
		}
		return name, nil
	}
	abs, err := filepath.Abs(name)
	if err != nil {
		return "", fmt.Errorf("model: %w", err)
	}
	return abs, nil
}
