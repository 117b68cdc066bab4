package limits_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/tandem-ai/tandem/limits/internal/table"
)

// repoRoot is the repository root, two levels up from this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("no go.mod above limits/: %v", err)
	}
	return root
}

// readLimits parses package limits and finds its uses across the tree.
func readLimits(t *testing.T) []table.Limit {
	t.Helper()
	ls, err := table.Read(repoRoot(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) < 100 {
		t.Fatalf("read %d limits; the package holds over a hundred", len(ls))
	}
	return ls
}

// The table in docs/RELIABILITY.md is what limits.go says, no more, no
// less: values, comments and the names the code uses.
func TestReliabilityTableIsCurrent(t *testing.T) {
	want := table.Markdown(readLimits(t))
	got, err := table.Current(repoRoot(t))
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("%s's limits table is out of date with limits/limits.go: run `go run ./limits/gen`", table.Doc)
	}
}

// A limit nothing uses is a limit nothing enforces.
func TestEveryLimitIsUsed(t *testing.T) {
	for _, l := range readLimits(t) {
		if len(l.Aliases) == 0 && len(l.Users) == 0 {
			t.Errorf("limits.%s is used nowhere", l.Name)
		}
	}
}
