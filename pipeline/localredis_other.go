//go:build !unix

package pipeline

import (
	"context"
	"syscall"
)

func detachedProcAttr() *syscall.SysProcAttr { return nil }

// lockDir is a no-op where flock is missing: start Tandem's processes one at
// a time there, or run Redis yourself.
func lockDir(context.Context, string) (func(), error) { return func() {}, nil }
