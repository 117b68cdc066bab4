package jobs

import (
	"testing"

	"github.com/tandem-ai/tandem/dataroot"
)

// rootedDeps returns Deps whose jobs are confined to the data root dir, as
// a worker started with --data-root dir.
func rootedDeps(t testing.TB, dir string) *Deps {
	t.Helper()
	root, err := dataroot.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	d := NewDeps(nil)
	d.SetDataRoot(root)
	return d
}
