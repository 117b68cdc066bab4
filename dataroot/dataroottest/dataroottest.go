// Package dataroottest gives tests a data root as a worker's --data-root
// gives one to its jobs: a directory opened as a dataroot.Root, installed
// where the code under test looks for it, and closed when the test ends.
//
// Tests of jobs, cmd/producer and cmd/scheduler use it instead of each
// repeating the open, the cleanup and the install:
//
//	deps := jobs.NewDeps(nil)
//	dataroottest.Install(t, deps, t.TempDir())
//
// It imports nothing of Tandem's but dataroot, so package jobs' own tests
// can use it too.
package dataroottest

import (
	"testing"

	"github.com/tandem-ai/tandem/dataroot"
)

// Installer is anything that takes a data root: jobs.Deps, generation.ModelStore.
type Installer interface {
	SetDataRoot(*dataroot.Root)
}

// Open opens dir as a data root and closes it when t and its subtests end.
// A directory that cannot be opened fails the test.
func Open(t testing.TB, dir string) *dataroot.Root {
	t.Helper()
	root, err := dataroot.Open(dir)
	if err != nil {
		t.Fatalf("data root %s: %v", dir, err)
	}
	t.Cleanup(func() { root.Close() })
	return root
}

// Install opens dir as a data root (see Open), installs it in into, and
// returns it.
func Install(t testing.TB, into Installer, dir string) *dataroot.Root {
	t.Helper()
	root := Open(t, dir)
	into.SetDataRoot(root)
	return root
}
