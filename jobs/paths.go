package jobs

import (
	"fmt"
	"os"
	"sync"

	"github.com/tandem-ai/tandem/dataroot"
	"github.com/tandem-ai/tandem/pipeline"
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
//	err = WriteJSONLAtomic(root, "output", a.Output, lines)
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
// ModelStore and resolveBase: a registered name or builtin:NAME as before,
// and a directory through the same root.

// EnvDataRoot is the environment variable naming the data root of
// `worker exec` and of Deps that were given none (pipeline.Config.DataRoot;
// the worker's --data-root flag sets it for the asynq server).
const EnvDataRoot = "TANDEM_DATA_ROOT"

// OpenEnvDataRoot opens the data root $TANDEM_DATA_ROOT names, or the
// default (pipeline.DefaultConfig().DataRoot, "."), checked as the worker
// checks --data-root.
func OpenEnvDataRoot() (*dataroot.Root, error) {
	cfg := pipeline.DefaultConfig()
	if v := os.Getenv(EnvDataRoot); v != "" {
		cfg.DataRoot = v
	}
	return OpenDataRoot(cfg)
}

// OpenDataRoot checks cfg.DataRoot and opens it; errors name the setting.
func OpenDataRoot(cfg pipeline.Config) (*dataroot.Root, error) {
	if err := cfg.CheckDataRoot(); err != nil {
		return nil, err
	}
	r, err := dataroot.Open(cfg.DataRoot)
	if err != nil {
		return nil, fmt.Errorf("%w (set --data-root or $%s to the directory job files live in)", err, EnvDataRoot)
	}
	return r, nil
}

// lazyRoot is a data root given explicitly or opened from the environment
// on first use.
type lazyRoot struct {
	mu   sync.Mutex
	root *dataroot.Root
}

func (l *lazyRoot) set(r *dataroot.Root) {
	l.mu.Lock()
	l.root = r
	l.mu.Unlock()
}

func (l *lazyRoot) get() (*dataroot.Root, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.root == nil {
		r, err := OpenEnvDataRoot()
		if err != nil {
			return nil, err // not kept: the next job tries again
		}
		l.root = r
	}
	return l.root, nil
}

// DataRoot is the root every job path is confined to: the one SetDataRoot
// installed (the worker's --data-root), else the one $TANDEM_DATA_ROOT
// names, opened on first use.
func (d *Deps) DataRoot() (*dataroot.Root, error) {
	if d == nil {
		return OpenEnvDataRoot()
	}
	return d.root.get()
}

// SetDataRoot installs the data root of d's jobs and of its model store.
// Call it before jobs run.
func (d *Deps) SetDataRoot(r *dataroot.Root) {
	d.root.set(r)
	if d.Models != nil {
		d.Models.SetDataRoot(r)
	}
}
