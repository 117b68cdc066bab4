// Package atomicfile writes files that readers see whole or not at all:
// the content goes to a temporary file in the target's directory, is
// synced, renamed over the target, and the directory is synced so the
// rename survives a crash. Outputs, checkpoints and model files are all
// written this way, so a job re-run after a crash replaces its file whole
// and never leaves half of one behind.
//
// WriteIn does it inside an os.Root: the temporary file, the rename and the
// directory sync all stay in the root, so a name that would climb out of it
// (a "..", an absolute path, a symbolic link pointing outside) is refused.
// Write is WriteIn on a root opened at the target's directory.
package atomicfile

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
)

// Mode is the permission of every file written here.
const Mode = 0o644

// Write fills path through fill. On any error the target is untouched and
// the temporary file removed.
func Write(path string, fill func(w io.Writer) error) error {
	root, err := os.OpenRoot(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer root.Close()
	return WriteIn(root, filepath.Base(path), fill)
}

// WriteBytes writes data to path atomically.
func WriteBytes(path string, data []byte) error {
	return Write(path, bytesFill(data))
}

// WriteIn fills name, a slash-separated name inside root, through fill: a
// temporary file beside it, synced, renamed over it, then the directory
// synced. The directory must exist. On any error the target is untouched
// and the temporary file removed.
func WriteIn(root *os.Root, name string, fill func(w io.Writer) error) error {
	name = filepath.ToSlash(name)
	dir := path.Dir(name)
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	tmp := path.Join(dir, "."+path.Base(name)+".tmp-"+hex.EncodeToString(rnd[:]))
	f, err := root.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, Mode)
	if err != nil {
		return err
	}
	err = fill(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = root.Chmod(tmp, Mode) // exactly Mode, whatever the umask
	}
	if err == nil {
		err = root.Rename(tmp, name)
	}
	if err != nil {
		_ = root.Remove(tmp)
		return err
	}
	return SyncDirIn(root, dir)
}

// WriteBytesIn writes data to name inside root atomically.
func WriteBytesIn(root *os.Root, name string, data []byte) error {
	return WriteIn(root, name, bytesFill(data))
}

func bytesFill(data []byte) func(io.Writer) error {
	return func(w io.Writer) error {
		_, err := io.Copy(w, bytes.NewReader(data))
		return err
	}
}

// SyncDir makes a rename inside dir durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return syncClose(d, dir)
}

// SyncDirIn is SyncDir for a directory inside root.
func SyncDirIn(root *os.Root, dir string) error {
	d, err := root.Open(dir)
	if err != nil {
		return err
	}
	return syncClose(d, dir)
}

func syncClose(d *os.File, name string) error {
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", name, err)
	}
	return nil
}
