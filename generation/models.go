package generation

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tandem-ai/tandem/dataroot"
	"github.com/tandem-ai/tandem/gpu"
	"github.com/tandem-ai/tandem/limits"
	"github.com/tandem-ai/tandem/model"
	"github.com/tandem-ai/tandem/registry"
)

// BuiltinPrefix names models that need no files: a seeded random-weights
// GPT-2 of a fixed small shape. They let `make demo`, tests and laptops run
// the whole pipeline before anyone has trained or downloaded a checkpoint.
const BuiltinPrefix = "builtin:"

// BuiltinConfigs are the shapes behind the builtin names. All use the full
// GPT-2 vocabulary so that the real r50k_base tokenizer applies.
var BuiltinConfigs = map[string]model.Config{
	"tiny":  {NLayer: 2, NHead: 2, NEmbd: 64, NPositions: 256, VocabSize: 50257, LayerNormEpsilon: 1e-5},
	"small": {NLayer: 4, NHead: 4, NEmbd: 128, NPositions: 512, VocabSize: 50257, LayerNormEpsilon: 1e-5},
}

// builtinSeed makes builtin weights identical on every worker, so outputs do
// not depend on which replica ran a chunk.
const builtinSeed = 1

// LoadedModel is a model on this worker and the engine that decodes every
// job's sequences on it together.
type LoadedModel struct {
	Name  string
	Model *model.Model
	// Engine runs the generation of every job that uses the model.
	Engine *Engine
	// Chat is how the model's chat transcripts are written: its
	// directory's ChatFormatFile, or DefaultChatFormat.
	Chat ChatFormat
	// fwd serialises Perplexity: the model's forward pass keeps its
	// activations inside the model. Decoding does not take it.
	fwd sync.Mutex
	// gpu is the copy on the worker's GPU (nil on the CPU), which the
	// engine decodes on.
	gpu *gpu.Model
}

// Perplexity scores tokens with model.Perplexity, one call at a time.
func (l *LoadedModel) Perplexity(tokens []int32, stride int) (model.PerplexityResult, error) {
	l.fwd.Lock()
	defer l.fwd.Unlock()
	return model.Perplexity(l.Model, tokens, stride)
}

// Bytes is the memory its parameters take.
func (l *LoadedModel) Bytes() int64 { return int64(len(l.Model.Params)) * 4 }

// EnvModelCacheBytes bounds the parameter bytes a worker keeps loaded.
const EnvModelCacheBytes = "TANDEM_MODEL_CACHE_BYTES"

// DefaultModelCacheBytes is the cache bound when EnvModelCacheBytes is unset:
// room for a few GPT-2 124M (about 0.5 GB each in float32) at once.
const DefaultModelCacheBytes = limits.DefaultModelCacheBytes

// ModelCacheBytesFromEnv reads EnvModelCacheBytes: a byte count, optionally
// with a KiB/MiB/GiB (or K/M/G) suffix; 0 means no bound. Unset gives
// DefaultModelCacheBytes.
func ModelCacheBytesFromEnv() (int64, error) {
	v, ok := os.LookupEnv(EnvModelCacheBytes)
	if !ok || strings.TrimSpace(v) == "" {
		return DefaultModelCacheBytes, nil
	}
	n, err := parseByteSize(v)
	if err != nil {
		return 0, fmt.Errorf("%s=%q: %w", EnvModelCacheBytes, v, err)
	}
	return n, nil
}

func parseByteSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("want a non-negative byte count such as 4294967296 or 4GiB")
	}
	return n * mult, nil
}

// ModelStore loads models once per worker and keeps them, least recently
// used first out once the parameters of the kept models exceed the byte
// limit. It resolves builtin names and model directories (Hugging Face GPT-2
// layout).
//
// Eviction drops the store's reference only: a job that already holds the
// model keeps decoding on it, and the memory goes when that job ends. The
// model last loaded is always kept, even when it alone exceeds the limit.
type ModelStore struct {
	mu        sync.Mutex
	limit     int64 // 0: no bound
	used      int64
	entries   map[string]*modelEntry
	lru       *list.List // of *modelEntry, most recently used in front
	evictions int64
	loads     int64

	tok    *model.Tokenizer
	tokErr error
	tokOne sync.Once

	// engine configures the engines of models loaded from now on
	// (SetEngineConfig).
	engine EngineConfig

	// root confines model directories named by jobs (SetDataRoot);
	// openRoot opens one when none was set.
	root     dataroot.Lazy
	openRoot func() (*dataroot.Root, error)
	// device gets a copy of every model loaded (nil: the CPU); registry
	// resolves registered names (nil: none are known).
	device   *gpu.Device
	registry *registry.Registry
	// load is model loading, replaceable in tests.
	load func(key string) (*model.Model, error)
	// chat reads a loaded model's chat format (loadChatFormat).
	chat func(key string) (ChatFormat, error)
}

// modelEntry is a model being loaded or loaded. ready closes when lm or err
// is set; waiters for the same name share one load.
type modelEntry struct {
	key   string
	ready chan struct{}
	lm    *LoadedModel
	err   error
	bytes int64
	elem  *list.Element // nil until loaded
}

// ModelStoreStats describes the cache.
type ModelStoreStats struct {
	Models    int   `json:"models"`
	Bytes     int64 `json:"bytes"`
	Limit     int64 `json:"limit"`
	Loads     int64 `json:"loads"`
	Evictions int64 `json:"evictions"`
}

// NewModelStore returns an empty store with no byte limit, device or
// registry; openRoot is as for StoreConfig.
func NewModelStore(openRoot func() (*dataroot.Root, error)) *ModelStore {
	return NewModelStoreWith(StoreConfig{OpenRoot: openRoot})
}

// StoreConfig is what a ModelStore is built from.
type StoreConfig struct {
	Limit int64 // parameter bytes kept loaded; 0: no limit
	// OpenRoot opens the data root on first use when SetDataRoot installed
	// none; with nil, call SetDataRoot before a model directory is named.
	OpenRoot func() (*dataroot.Root, error)
	Device   *gpu.Device        // the worker's GPU, which models are copied onto; nil: the CPU
	Registry *registry.Registry // resolves registered names (name, name@N); nil: none
}

// NewModelStoreWith returns an empty store configured by c.
func NewModelStoreWith(c StoreConfig) *ModelStore {
	s := &ModelStore{limit: max(c.Limit, 0), entries: map[string]*modelEntry{}, lru: list.New(),
		openRoot: c.OpenRoot, device: c.Device, registry: c.Registry}
	s.load, s.chat = s.loadModel, s.loadChatFormat
	return s
}

// SetDataRoot installs the data root model directories are read from
// (jobs.Deps.SetDataRoot calls it); without one the store opens the root
// its openRoot gives on first use.
func (s *ModelStore) SetDataRoot(r *dataroot.Root) { s.root.Set(r) }

// SetEngineConfig sets how the engines of models loaded from now on run
// (Slots 0: the default for the device the model is on); Name and
// NewDecoder are the store's to set.
func (s *ModelStore) SetEngineConfig(cfg EngineConfig) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.engine = cfg
}

// Tokenizer returns the shared GPT-2 tokenizer (loaded offline, once).
func (s *ModelStore) Tokenizer() (*model.Tokenizer, error) {
	s.tokOne.Do(func() { s.tok, s.tokErr = model.NewTokenizer() })
	return s.tok, s.tokErr
}

// Get returns the named model, loading it on first use. Concurrent Gets of
// one name share a single load; loads of different names run in parallel.
// A failed load is not cached: the next Get tries again.
func (s *ModelStore) Get(name string) (*LoadedModel, error) {
	key, err := s.key(name)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if e, ok := s.entries[key]; ok {
		if e.elem != nil {
			s.lru.MoveToFront(e.elem)
			s.mu.Unlock()
			return e.lm, nil
		}
		s.mu.Unlock()
		<-e.ready
		return e.lm, e.err
	}
	e := &modelEntry{key: key, ready: make(chan struct{})}
	s.entries[key] = e
	s.mu.Unlock()

	m, err := s.load(key)
	tok, tokErr := s.Tokenizer()
	if err == nil {
		err = tokErr
	}
	var chat ChatFormat
	if err == nil {
		chat, err = s.chat(key)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	defer close(e.ready)
	if err != nil {
		e.err = fmt.Errorf("model %q: %w", name, err)
		delete(s.entries, key)
		return nil, e.err
	}
	e.lm = &LoadedModel{Name: name, Model: m, Chat: chat}
	var decoders model.DecoderFactory
	if d := s.device; d != nil {
		if decoders, err = e.lm.attachDevice(d); err != nil {
			e.err = fmt.Errorf("model %q: loading onto %s: %w", name, d, err)
			delete(s.entries, key)
			return nil, e.err
		}
	}
	cfg := s.engine
	cfg.Name, cfg.NewDecoder = name, decoders
	e.lm.Engine = NewEngine(m, tok, cfg)
	e.bytes = e.lm.Bytes()
	e.elem = s.lru.PushFront(e)
	s.used += e.bytes
	s.loads++
	s.evictLocked()
	return e.lm, nil
}

// evictLocked drops least recently used models until the kept ones fit the
// limit, never the most recent one.
func (s *ModelStore) evictLocked() {
	if s.limit == 0 {
		return
	}
	for s.used > s.limit && s.lru.Len() > 1 {
		back := s.lru.Back()
		e := back.Value.(*modelEntry)
		s.lru.Remove(back)
		delete(s.entries, e.key)
		s.used -= e.bytes
		s.evictions++
		e.lm.retire()
	}
}

// Stats describes what the store holds.
func (s *ModelStore) Stats() ModelStoreStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return ModelStoreStats{Models: s.lru.Len(), Bytes: s.used, Limit: s.limit, Loads: s.loads, Evictions: s.evictions}
}

// key is a model's cache key: builtin:NAME, a registered version's
// directory, or rootModelPrefix and the absolute path of a directory
// inside the data root. A
// directory named any other way (outside the root, "..", a link pointing
// out) is refused here, before anything is read.
func (s *ModelStore) key(name string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
	defer cancel()
	key, isDir, err := resolveModelName(ctx, name, s.registry)
	if err != nil || !isDir {
		return key, err
	}
	root, err := s.root.Get(s.openRoot)
	if err != nil {
		return "", err
	}
	rel, err := root.Name("model", name)
	if err != nil {
		return "", err
	}
	return rootModelPrefix + root.Path(rel), nil
}

// rootModelPrefix marks the key of a model directory a job named in the
// data root, which loads through the root, from a registered version's
// directory, which the registry wrote and which may lie anywhere, in the
// service's own state (the data dir inside the root, by default) too.
const rootModelPrefix = "root:"

// resolveTimeout bounds the registry's Redis round trips of one Get.
const resolveTimeout = 5 * time.Second

// loadModel loads by key: builtin weights, a directory inside the data
// root through the root (so no link inside it can lead out), or a
// registered version's directory, which the registry wrote and which may
// lie outside the root or in its reserved directories.
func (s *ModelStore) loadModel(key string) (*model.Model, error) {
	if strings.HasPrefix(key, BuiltinPrefix) {
		return model.New(BuiltinConfigs[strings.TrimPrefix(key, BuiltinPrefix)], builtinSeed)
	}
	if dir, ok := strings.CutPrefix(key, rootModelPrefix); ok {
		root, err := s.root.Get(s.openRoot)
		if err != nil {
			return nil, err
		}
		if rel, err := filepath.Rel(root.Dir(), dir); err == nil && filepath.IsLocal(rel) {
			d, err := root.OpenDir("model", rel)
			if err != nil {
				// Nothing there, a file (os.Root's "not a directory" is
				// no errno), a link out: all one answer.
				return nil, ErrModelNotFound
			}
			defer d.Close()
			m, err := model.LoadFrom(func(name string) (*os.File, error) {
				return dataroot.OpenRegular(d, name, os.O_RDONLY, 0)
			}, ".")
			return m, modelNotFound(err)
		}
		return nil, ErrModelNotFound
	}
	m, err := model.LoadDir(key)
	return m, modelNotFound(err) // a registered version whose files are gone
}

// loadChatFormat reads the ChatFormatFile of the model directory behind
// key, as loadModel reads its weights; a builtin model, or a directory
// without the file, has DefaultChatFormat. A file that is there but wrong
// fails the load, so that a model is never run with a format nobody meant.
func (s *ModelStore) loadChatFormat(key string) (ChatFormat, error) {
	var f *os.File
	var err error
	switch dir, inRoot := strings.CutPrefix(key, rootModelPrefix); {
	case strings.HasPrefix(key, BuiltinPrefix):
		return DefaultChatFormat, nil
	case inRoot:
		root, rerr := s.root.Get(s.openRoot)
		if rerr != nil {
			return DefaultChatFormat, rerr
		}
		rel, rerr := filepath.Rel(root.Dir(), dir)
		if rerr != nil || !filepath.IsLocal(rel) {
			return DefaultChatFormat, nil
		}
		d, derr := root.OpenDir("model", rel)
		if derr != nil {
			return DefaultChatFormat, nil // the weights were read: only a test's fake load gets here
		}
		defer d.Close()
		f, err = dataroot.OpenRegular(d, ChatFormatFile, os.O_RDONLY, 0)
	default:
		f, err = os.Open(filepath.Join(key, ChatFormatFile))
	}
	if errors.Is(err, fs.ErrNotExist) {
		return DefaultChatFormat, nil
	}
	if err != nil {
		return DefaultChatFormat, fmt.Errorf("%s: %w", ChatFormatFile, modelNotFound(err))
	}
	defer f.Close()
	return ReadChatFormat(f)
}

// ErrUnknownBuiltin is a builtin: name that names no builtin model.
var ErrUnknownBuiltin = errors.New("unknown builtin")

// ErrModelNotFound is the one answer for a model directory that cannot be
// read as a model for want of its files: nothing at the path, a file, a
// directory without config.json or model.safetensors, a FIFO, a link that
// leads out. One answer for all of them, so a client cannot map the data
// root by asking for models.
var ErrModelNotFound = errors.New("not found")

// modelNotFound turns the file system's reasons for a missing model into
// ErrModelNotFound, and keeps other errors (a damaged file) as they are.
func modelNotFound(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR), errors.Is(err, dataroot.ErrNotRegular),
		errors.Is(err, fs.ErrPermission), dataroot.IsEscape(err):
		return ErrModelNotFound
	}
	return err
}

// ValidateModelName checks a model name without loading it or knowing the
// worker's data root: a known builtin name, a registered name, or a
// directory path that no data root would refuse (dataroot.CheckPath).
func ValidateModelName(name string) error {
	_, _, err := resolveModelName(context.Background(), name, nil)
	return err
}

// resolveModelName sorts a model name: a name registered in reg (or
// name@version) resolves to its version's directory on every call, so a
// promotion reaches the next job; builtin:NAME is checked; anything else is
// a directory path (isDir), checked as far as it can be without the root.
func resolveModelName(ctx context.Context, name string, reg *registry.Registry) (key string, isDir bool, err error) {
	if name == "" {
		return "", false, fmt.Errorf("model: required (a directory, a registered name or %stiny)", BuiltinPrefix)
	}
	if reg != nil {
		dir, ok, err := reg.Resolve(ctx, name)
		if err != nil {
			return "", false, fmt.Errorf("model %q: %w", name, err)
		}
		if ok {
			return dir, false, nil
		}
	}
	if strings.HasPrefix(name, BuiltinPrefix) {
		if _, ok := BuiltinConfigs[strings.TrimPrefix(name, BuiltinPrefix)]; !ok {
			return "", false, fmt.Errorf("model: %w %q (have %stiny, %ssmall)", ErrUnknownBuiltin, name, BuiltinPrefix, BuiltinPrefix)
		}
		return name, false, nil
	}
	if err := dataroot.CheckPath("model", name); err != nil {
		return "", false, err
	}
	return name, true, nil
}
