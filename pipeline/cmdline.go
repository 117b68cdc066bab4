package pipeline

import (
	"errors"
	"flag"
	"fmt"
	"strings"
)

// UsageError is a command line that does not parse: an unknown subcommand
// or flag, a missing or stray argument. Its usage has been printed by the
// time it is returned; the binaries exit with status 2 for it (ExitCode).
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// ExitCode is the status a binary exits with for the error its command
// returned, as flag.ExitOnError has it: 0 for none and for help asked for
// (flag.ErrHelp), 2 for a *UsageError, 1 for any other.
func ExitCode(err error) int {
	var ue *UsageError
	switch {
	case err == nil || errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		return 2
	}
	return 1
}

// ParseArgs parses a command's arguments into fs: its flags, and one
// positional argument per name in names, before, between or after the
// flags (all of them after "--"); a last name ending in "..." takes any
// number. With names, fs's usage becomes "usage: NAME [flags] NAMES" and
// the flags. "help" as the first argument, like -h and --help, prints the
// usage and returns flag.ErrHelp; a bad flag, or an argument missing or
// too many, prints it and returns a *UsageError.
func ParseArgs(fs *flag.FlagSet, args []string, names ...string) ([]string, error) {
	if len(names) > 0 {
		fs.Usage = func() {
			fmt.Fprintf(fs.Output(), "usage: %s [flags] %s\n\nflags:\n", fs.Name(), strings.Join(names, " "))
			fs.PrintDefaults()
		}
	}
	if len(args) > 0 && args[0] == "help" {
		fs.Usage()
		return nil, flag.ErrHelp
	}
	var pos []string
	for {
		if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
			return nil, err
		} else if err != nil {
			return nil, &UsageError{err} // the flag package printed it, and the usage
		}
		rest := fs.Args()
		if n := len(args) - len(rest); len(rest) == 0 || n > 0 && args[n-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
	want, variadic := len(names), len(names) > 0 && strings.HasSuffix(names[len(names)-1], "...")
	var err error
	switch {
	case variadic && len(pos) >= want-1:
	case len(pos) < want:
		err = fmt.Errorf("%s: required", names[len(pos)])
	case len(pos) > want:
		err = fmt.Errorf("unexpected argument %q", pos[want])
	}
	if err != nil {
		fs.Usage()
		return nil, &UsageError{err}
	}
	return pos, nil
}

// SubcommandError is what a command that takes a subcommand (or a job
// kind: what) returns when args[0] names none of its own, once it has
// printed its usage: flag.ErrHelp for help, -h and --help, a *UsageError
// for anything else and for no argument at all.
func SubcommandError(what string, args []string) error {
	switch {
	case len(args) == 0:
		return &UsageError{fmt.Errorf("a %s is required", what)}
	case args[0] == "help" || args[0] == "-h" || args[0] == "-help" || args[0] == "--help":
		return flag.ErrHelp
	}
	return &UsageError{fmt.Errorf("unknown %s %q", what, args[0])}
}
