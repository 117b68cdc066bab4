package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/tandem-ai/tandem/artifact"
	"github.com/tandem-ai/tandem/dataroot"
	"github.com/tandem-ai/tandem/generation"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/registry"
)

// Every file a job reads or writes because its args name it goes through
// the worker's data root (package dataroot): one call per file, with the
// args field's JSON name so that errors say which field to fix.
//
//	root, err := w.Deps.DataRoot()
//	if err != nil {
//		return err
//	}
//	f, err := root.Open("input", a.Input)                // read a file
//	data, err := root.ReadFile("input", a.Input, limit)  // read a small file whole
//	err = root.WriteFile("output", a.Output, fill)       // replace a file atomically
//	err = generation.WriteJSONLAtomic(root, "output", a.Output, lines)
//	f, err := root.OpenFile("record", a.Record, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
//	dir, err := root.OpenDir("out", a.Out)               // an *os.Root for a directory
//	name, err := root.MkdirAll("out", a.Out)             // create it; name inside the root
//
// A path that escapes the root comes back as a permanent error naming the
// field (`field "output": path "../x" escapes the data root /data`), so
// returning it as is archives the job without a retry. Other errors (a
// missing input, a full disk) keep their cause: wrap them in
// pipeline.Permanent where no retry can help, as a missing input. In
// Validate, dataroot.CheckPath(field, path) refuses what no root would
// accept, so a producer refuses it before enqueueing.
//
// Model names (generate, eval, finetune, batches) are resolved by the
// generation.ModelStore and resolveBase: a registered name or builtin:NAME
// as before, and a directory through the same root.

// EnvDataRoot is the environment variable naming the data root of
// `worker exec` and of Deps that were given none (pipeline.Config.DataRoot;
// the worker's --data-root flag sets it for the asynq server).
const EnvDataRoot = "TANDEM_DATA_ROOT"

// EnvDataDir names the data dir (pipeline.Config.DataDir), which
// OpenEnvDataRoot reserves as OpenDataRoot does.
const EnvDataDir = "TANDEM_DATA_DIR"

// OpenEnvDataRoot opens the data root $TANDEM_DATA_ROOT names, or the
// default (pipeline.DefaultConfig().DataRoot, "."), checked as the worker
// checks --data-root, with the data dir $TANDEM_DATA_DIR names (or the
// default) reserved.
func OpenEnvDataRoot() (*dataroot.Root, error) {
	cfg := pipeline.DefaultConfig()
	if v := os.Getenv(EnvDataRoot); v != "" {
		cfg.DataRoot = v
	}
	if v := os.Getenv(EnvDataDir); v != "" {
		cfg.DataDir = v
	}
	return OpenDataRoot(cfg)
}

// OpenDataRoot checks cfg.DataRoot and opens it, with the service's own
// state reserved (ReservedDirs); errors name the setting. A data root that
// lies inside the data dir or the artifact store is refused
// (dataroot.ErrRootInReserved): check for it with errors.Is to stop at
// start.
func OpenDataRoot(cfg pipeline.Config) (*dataroot.Root, error) {
	if err := cfg.CheckDataRoot(); err != nil {
		return nil, err
	}
	r, err := dataroot.Open(cfg.DataRoot, ReservedDirs(cfg)...)
	if errors.Is(err, dataroot.ErrRootInReserved) {
		return nil, fmt.Errorf("%w (--data-root, $%s)", err, EnvDataRoot)
	}
	if err != nil {
		return nil, fmt.Errorf("%w (set --data-root or $%s to the directory job files live in)", err, EnvDataRoot)
	}
	return r, nil
}

// ReservedDirs are the directories of the service's own state, which no
// job path may reach even where they lie inside the data root (the default
// layout: data root ".", data dir ".tandem"): the local artifact store
// (batch outputs, rebuild snapshots), the model registry, and the data dir
// around them (private Redis, NATS store, uploaded batch inputs). Most
// specific first, so that errors name the artifact store rather than the
// data dir that holds it. A configuration without a data dir (a test's)
// reserves only an artifact store of its own (local:DIR).
func ReservedDirs(cfg pipeline.Config) []dataroot.Reserved {
	var out []dataroot.Reserved
	kind, dir, _ := strings.Cut(strings.TrimSpace(os.Getenv(artifact.EnvStore)), ":")
	hasDataDir := strings.TrimSpace(cfg.DataDir) != ""
	switch {
	case kind == "local" && dir != "":
		out = append(out, dataroot.Reserved{Dir: dir, What: "the artifact store (" + artifact.EnvStore + ")"})
	case (kind == "" || kind == "local") && hasDataDir:
		out = append(out, dataroot.Reserved{Dir: filepath.Join(cfg.DataDir, "artifacts"), What: "the artifact store (" + EnvDataDir + "/artifacts)"})
	}
	if !hasDataDir {
		return out
	}
	out = append(out,
		dataroot.Reserved{Dir: RegistryDir(cfg.DataDir), What: "the model registry (" + EnvDataDir + "/registry)"},
		dataroot.Reserved{Dir: cfg.DataDir, What: "the data dir (" + EnvDataDir + ")"})
	return out
}

// JobPath is one file or directory a job's args name, by the args field's
// JSON name.
type JobPath struct {
	Field, Path string
}

// pathArgs is implemented by the args of every kind that names files: the
// list CheckPaths checks. A new path field goes into its kind's jobPaths.
type pathArgs interface {
	pipeline.JobArgs
	jobPaths() []JobPath
}

// pathsOf decodes payload as T's args and lists their paths.
func pathsOf[T pathArgs](payload []byte) ([]JobPath, error) {
	var a T
	if err := json.Unmarshal(payload, &a); err != nil {
		return nil, fmt.Errorf("decode %s args: %w", a.Kind(), err)
	}
	return a.jobPaths(), nil
}

// CheckPaths checks every path the args of kind name against root, as the
// worker's root will when the job runs: nothing outside the root, nothing
// in the service's state (ReservedDirs). The producer calls it before it
// enqueues, so a client hears of a refused path at once; errors name the
// field and are permanent. Model names that are no directory (builtin:NAME)
// are skipped; payload should have passed ValidatePayload.
func CheckPaths(root *dataroot.Root, kind string, payload []byte) error {
	k, ok := kinds[kind]
	if !ok || k.paths == nil {
		return nil
	}
	paths, err := k.paths(payload)
	if err != nil {
		return pipeline.Permanent(err)
	}
	return checkPaths(root, paths)
}

// namedPaths drops the paths a job does not set, and model names that
// are no directory.
func namedPaths(paths []JobPath) []JobPath {
	var out []JobPath
	for _, p := range paths {
		if p.Path == "" || p.Field == "model" && strings.HasPrefix(p.Path, generation.BuiltinPrefix) {
			continue
		}
		out = append(out, p)
	}
	return out
}

func checkPaths(root *dataroot.Root, paths []JobPath) error {
	var errs []error
	for _, p := range namedPaths(paths) {
		if _, err := root.Name(p.Field, p.Path); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// pathChecked runs a kind's worker once every path its args name has
// passed the worker's data root (CheckPaths' check, again, on the worker):
// a job enqueued around the producer (raw, or by an older one) fails
// permanently before any work, not at its first write after an hour of
// generation.
type pathChecked[T pathArgs] struct {
	w    pipeline.Worker[T]
	deps *Deps
}

// withPathCheck wraps w in a pathChecked.
func withPathCheck[T pathArgs](d *Deps, w pipeline.Worker[T]) pipeline.Worker[T] {
	return pathChecked[T]{w: w, deps: d}
}

// Work implements pipeline.Worker.
func (c pathChecked[T]) Work(ctx context.Context, job *pipeline.Job[T]) error {
	if paths := namedPaths(job.Args.jobPaths()); len(paths) > 0 {
		root, err := c.deps.DataRoot()
		if err != nil {
			return err
		}
		if err := checkPaths(root, paths); err != nil {
			return pipeline.Permanent(err)
		}
	}
	return c.w.Work(ctx, job)
}

// DataRoot is the root every job path is confined to: the one SetDataRoot
// installed (the worker's --data-root), else the one $TANDEM_DATA_ROOT
// names, opened on first use.
func (d *Deps) DataRoot() (*dataroot.Root, error) {
	if d == nil {
		return OpenEnvDataRoot()
	}
	return d.root.Get(OpenEnvDataRoot)
}

// SetDataRoot installs the data root of d's jobs and of its model store.
// Call it before jobs run.
func (d *Deps) SetDataRoot(r *dataroot.Root) {
	d.root.Set(r)
	if d.Models != nil {
		d.Models.SetDataRoot(r)
	}
}

// checkModelPath is Validate's check of a model name that needs neither
// Redis nor the data root: builtin:NAME and registry names pass (they are
// resolved when the job runs); a directory path must pass
// dataroot.CheckPath.
func checkModelPath(field, name string) error {
	if strings.HasPrefix(name, generation.BuiltinPrefix) {
		return nil
	}
	if _, _, err := registry.ParseRef(name); err == nil {
		return nil
	}
	return dataroot.CheckPath(field, name)
}
