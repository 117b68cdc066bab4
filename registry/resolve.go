package registry

import (
	"context"
	"sync"
	"time"
)

// resolveTimeout bounds one resolution's Redis round trips.
const resolveTimeout = 5 * time.Second

var (
	defaultMu  sync.RWMutex
	defaultReg *Registry
)

// SetDefault installs the registry ResolveModel consults (nil removes it).
func SetDefault(r *Registry) {
	defaultMu.Lock()
	defaultReg = r
	defaultMu.Unlock()
}

// Default is the installed registry, or nil.
func Default() *Registry {
	defaultMu.RLock()
	defer defaultMu.RUnlock()
	return defaultReg
}

// ResolveModel is the hook for model-name resolution (generation.ModelStore):
// "name" gives the promoted version's directory, "name@N" version N's.
// ok is false, with no error, when no registry is installed or name is not
// a registered model, so the caller falls back to treating it as a path.
// Resolution happens on every call, so a promotion is seen by the next job.
func ResolveModel(name string) (dir string, ok bool, err error) {
	r := Default()
	if r == nil {
		return "", false, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
	defer cancel()
	return r.Resolve(ctx, name)
}
