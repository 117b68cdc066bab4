package dataroot_test

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/tandem-ai/tandem/dataroot"
)

// A job reads and writes the files its args name through the worker's data
// root; a path that leaves the root is refused with the field named.
func Example() {
	dir, _ := os.MkdirTemp("", "data-root")
	defer os.RemoveAll(dir)
	_ = os.WriteFile(filepath.Join(dir, "prompts.txt"), []byte("hello\n"), 0o644)

	root, err := dataroot.Open(dir)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer root.Close()

	in, err := root.ReadFile("input", "prompts.txt", 1<<20) // relative to the root
	fmt.Printf("read %q, %v\n", in, err)

	err = root.WriteFile("output", "out/results.txt", func(w io.Writer) error {
		_, err := io.WriteString(w, "world\n") // a temp file renamed into place
		return err
	})
	fmt.Println("write:", err)

	_, err = root.ReadFile("input", "../etc/passwd", 1<<20)
	fmt.Println(err != nil, dataroot.IsEscape(err))
	// Output:
	// read "hello\n", <nil>
	// write: <nil>
	// true true
}
