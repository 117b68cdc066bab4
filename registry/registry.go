package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tandem-ai/tandem/limits"
	"github.com/tandem-ai/tandem/model"
	"github.com/tandem-ai/tandem/pipeline"
)

// MaxNameLen bounds a model name.
const MaxNameLen = limits.ModelNameLen

// nameRE is a model name: lower-case letters, digits, '.', '_' and '-',
// starting with a letter or digit. No '/' and no ':', so a name can never be
// mistaken for a path or a builtin model.
var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`)

// Errors callers may test for.
var (
	ErrNotFound   = errors.New("registry: not found")
	ErrBadName    = errors.New("registry: bad model name")
	ErrNoPromoted = errors.New("registry: no promoted version")
)

// Version is one registered model version.
type Version struct {
	Name    string `json:"name"`
	Version int    `json:"version"`
	// Parent is where training started: "name@N" of a registered version,
	// a model directory, or "scratch".
	Parent        string             `json:"parent,omitempty"`
	DatasetSHA256 string             `json:"dataset_sha256,omitempty"`
	Hyperparams   json.RawMessage    `json:"hyperparams,omitempty"`
	Metrics       map[string]float64 `json:"metrics,omitempty"`
	// Artifact is the model directory (config.json, model.safetensors).
	Artifact  string    `json:"artifact"`
	CreatedAt time.Time `json:"created_at"`
	Promoted  bool      `json:"promoted"` // filled on read
}

// Ref is "name@N".
func (v Version) Ref() string { return v.Name + "@" + strconv.Itoa(v.Version) }

// Registry is the model registry.
type Registry struct {
	rdb  redis.UniversalClient
	root string
}

// New returns a registry storing metadata in rdb and artifacts under root.
func New(rdb redis.UniversalClient, root string) *Registry {
	return &Registry{rdb: rdb, root: root}
}

// Root is the artifact root.
func (r *Registry) Root() string { return r.root }

func keyNames() string               { return pipeline.ModelKeyPrefix + "names" }
func keySeq(name string) string      { return pipeline.ModelKeyPrefix + name + ":seq" }
func keyVersions(name string) string { return pipeline.ModelKeyPrefix + name + ":versions" }
func keyPromoted(name string) string { return pipeline.ModelKeyPrefix + name + ":promoted" }

// ValidateName checks a model name.
func ValidateName(name string) error {
	if name == "" || len(name) > MaxNameLen || !nameRE.MatchString(name) {
		return fmt.Errorf("%w %q: want 1..%d of a-z 0-9 . _ - starting with a letter or digit", ErrBadName, name, MaxNameLen)
	}
	return nil
}

// ParseRef splits "name" or "name@N"; version 0 means the promoted one.
func ParseRef(ref string) (name string, version int, err error) {
	name, vs, has := strings.Cut(ref, "@")
	if err := ValidateName(name); err != nil {
		return "", 0, err
	}
	if has {
		version, err = strconv.Atoi(strings.TrimPrefix(vs, "v"))
		if err != nil || version < 1 {
			return "", 0, fmt.Errorf("%w %q: version must be a positive number", ErrBadName, ref)
		}
	}
	return name, version, nil
}

// Register copies the model in srcDir into the artifact root as the next
// version of name and records v's metadata (Name, Version, Artifact and
// CreatedAt are filled in). The artifact directory appears whole or not at
// all: files are copied into a temporary directory that is then renamed.
func (r *Registry) Register(ctx context.Context, name, srcDir string, v Version) (Version, error) {
	_, err := model.LoadConfig(srcDir)
	open := func(file string) (*os.File, error) { return os.Open(filepath.Join(srcDir, file)) }
	return r.register(ctx, name, err, open, v)
}

// RegisterFrom is Register for a model directory already open as an
// os.Root (a fine-tune's run directory in the data root): the files are
// read through it, so nothing outside it is copied.
func (r *Registry) RegisterFrom(ctx context.Context, name string, src *os.Root, v Version) (Version, error) {
	_, err := model.LoadConfigRoot(src, ".")
	return r.register(ctx, name, err, src.Open, v)
}

// register copies the files open opens; cfgErr is the source's config
// check.
func (r *Registry) register(ctx context.Context, name string, cfgErr error, open func(file string) (*os.File, error), v Version) (Version, error) {
	if err := ValidateName(name); err != nil {
		return Version{}, err
	}
	if cfgErr != nil {
		return Version{}, fmt.Errorf("registry: source model: %w", cfgErr)
	}
	n, err := r.rdb.Incr(ctx, keySeq(name)).Result()
	if err != nil {
		return Version{}, fmt.Errorf("registry: %w", err)
	}
	v.Name, v.Version, v.CreatedAt, v.Promoted = name, int(n), time.Now().UTC(), false
	dst := filepath.Join(r.root, name, "v"+strconv.Itoa(v.Version))
	if err := copyModelDir(open, dst); err != nil {
		return Version{}, fmt.Errorf("registry: %w", err)
	}
	abs, err := filepath.Abs(dst)
	if err != nil {
		return Version{}, fmt.Errorf("registry: %w", err)
	}
	v.Artifact = abs
	b, err := json.Marshal(v)
	if err != nil {
		return Version{}, fmt.Errorf("registry: %w", err)
	}
	pipe := r.rdb.TxPipeline()
	pipe.HSet(ctx, keyVersions(name), strconv.Itoa(v.Version), b)
	pipe.SAdd(ctx, keyNames(), name)
	if _, err := pipe.Exec(ctx); err != nil {
		return Version{}, fmt.Errorf("registry: %w", err)
	}
	return v, nil
}

// Names lists the registered model names, sorted.
func (r *Registry) Names(ctx context.Context) ([]string, error) {
	names, err := r.rdb.SMembers(ctx, keyNames()).Result()
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	sort.Strings(names)
	return names, nil
}

// Versions lists a name's versions, oldest first.
func (r *Registry) Versions(ctx context.Context, name string) ([]Version, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	all, err := r.rdb.HGetAll(ctx, keyVersions(name)).Result()
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	if len(all) == 0 {
		return nil, fmt.Errorf("%w: model %q", ErrNotFound, name)
	}
	promoted, err := r.promotedNumber(ctx, name)
	if err != nil {
		return nil, err
	}
	out := make([]Version, 0, len(all))
	for _, raw := range all {
		var v Version
		if err := json.Unmarshal([]byte(raw), &v); err != nil {
			return nil, fmt.Errorf("registry: %s: %w", name, err)
		}
		v.Promoted = v.Version == promoted
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

// Get returns one version; version 0 means the promoted one.
func (r *Registry) Get(ctx context.Context, name string, version int) (Version, error) {
	if err := ValidateName(name); err != nil {
		return Version{}, err
	}
	promoted, err := r.promotedNumber(ctx, name)
	if err != nil {
		return Version{}, err
	}
	if version == 0 {
		if promoted == 0 {
			return Version{}, fmt.Errorf("%w for model %q", ErrNoPromoted, name)
		}
		version = promoted
	}
	raw, err := r.rdb.HGet(ctx, keyVersions(name), strconv.Itoa(version)).Result()
	if errors.Is(err, redis.Nil) {
		return Version{}, fmt.Errorf("%w: %s@%d", ErrNotFound, name, version)
	}
	if err != nil {
		return Version{}, fmt.Errorf("registry: %w", err)
	}
	var v Version
	if err := json.Unmarshal([]byte(raw), &v); err != nil {
		return Version{}, fmt.Errorf("registry: %s@%d: %w", name, version, err)
	}
	v.Promoted = v.Version == promoted
	return v, nil
}

// Promote makes version the one "name" resolves to.
func (r *Registry) Promote(ctx context.Context, name string, version int) (Version, error) {
	v, err := r.Get(ctx, name, max(version, 1))
	if err != nil {
		return Version{}, err
	}
	if err := r.rdb.Set(ctx, keyPromoted(name), strconv.Itoa(v.Version), 0).Err(); err != nil {
		return Version{}, fmt.Errorf("registry: %w", err)
	}
	v.Promoted = true
	return v, nil
}

func (r *Registry) promotedNumber(ctx context.Context, name string) (int, error) {
	s, err := r.rdb.Get(ctx, keyPromoted(name)).Result()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("registry: %w", err)
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("registry: promoted version of %q is %q", name, s)
	}
	return n, nil
}

// Resolve maps "name" or "name@N" to its artifact directory. ok is false
// when ref is not a registry reference (a path, builtin:NAME) or names no
// registered model, so the caller can treat it as a path; err reports a
// registered name whose version is missing or not promoted, and Redis
// failures.
func (r *Registry) Resolve(ctx context.Context, ref string) (dir string, ok bool, err error) {
	name, version, perr := ParseRef(ref)
	if perr != nil {
		return "", false, nil
	}
	known, err := r.rdb.SIsMember(ctx, keyNames(), name).Result()
	if err != nil {
		return "", false, fmt.Errorf("registry: %w", err)
	}
	if !known {
		return "", false, nil
	}
	v, err := r.Get(ctx, name, version)
	if err != nil {
		return "", false, err
	}
	return v.Artifact, true, nil
}

// copyModelDir copies a model's two files, opened by open, into dst
// through a temporary sibling directory and a rename.
func copyModelDir(open func(file string) (*os.File, error), dst string) error {
	parent := filepath.Dir(dst)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dst)+".tmp-")
	if err != nil {
		return err
	}
	for _, f := range []string{model.ConfigFile, model.SafetensorsFile} {
		if err := copyFile(open, f, filepath.Join(tmp, f)); err != nil {
			os.RemoveAll(tmp)
			return err
		}
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		os.RemoveAll(tmp)
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.RemoveAll(tmp)
		return err
	}
	return nil
}

func copyFile(open func(file string) (*os.File, error), src, dst string) error {
	in, err := open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
