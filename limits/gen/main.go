// Command gen writes the limits table of docs/RELIABILITY.md from package
// limits: `go run ./limits/gen` from the repository root, after changing a
// limit. `go test ./limits/` fails while the two disagree.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/tandem-ai/tandem/limits/internal/table"
)

func main() {
	if err := run("."); err != nil {
		fmt.Fprintln(os.Stderr, "limits/gen:", err)
		os.Exit(1)
	}
}

func run(root string) error {
	ls, err := table.Read(root)
	if err != nil {
		return err
	}
	path := filepath.Join(root, table.Doc)
	doc, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	out, err := table.Splice(string(doc), table.Markdown(ls))
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if out == string(doc) {
		fmt.Printf("%s: limits table already current (%d limits)\n", path, len(ls))
		return nil
	}
	if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
		return err
	}
	fmt.Printf("%s: limits table written (%d limits)\n", path, len(ls))
	return nil
}
