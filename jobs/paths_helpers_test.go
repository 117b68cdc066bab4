package jobs

import (
	"testing"

	"github.com/tandem-ai/tandem/dataroot/dataroottest"
)

// rootedDeps returns Deps whose jobs are confined to the data root dir, as
// a worker started with --data-root dir.
func rootedDeps(t testing.TB, dir string) *Deps {
	t.Helper()
	d := NewDeps(nil)
	dataroottest.Install(t, d, dir)
	return d
}
