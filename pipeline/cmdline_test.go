package pipeline

import (
	"errors"
	"flag"
	"io"
	"slices"
	"testing"
)

// TestParseArgs: positional arguments may come before, between and after
// the flags, all of them after "--"; help and -h are help; a missing or a
// stray argument is a usage error.
func TestParseArgs(t *testing.T) {
	for _, c := range []struct {
		args, names, want []string
		code              int // the exit status for the error
	}{
		{[]string{"id", "-n", "3"}, []string{"ID"}, []string{"id"}, 0},
		{[]string{"-n", "3", "id"}, []string{"ID"}, []string{"id"}, 0},
		{[]string{"a", "-n", "3", "b"}, []string{"A", "B"}, []string{"a", "b"}, 0},
		{[]string{"-n", "3", "--", "-x", "y"}, []string{"TEXT..."}, []string{"-x", "y"}, 0},
		{nil, []string{"TEXT..."}, nil, 0},
		{[]string{"-"}, []string{"FILE"}, []string{"-"}, 0},
		{[]string{"help"}, nil, nil, 0},
		{[]string{"id", "-h"}, []string{"ID"}, nil, 0},
		{[]string{"-n", "3"}, []string{"ID"}, nil, 2},
		{[]string{"id", "extra"}, []string{"ID"}, nil, 2},
		{[]string{"extra"}, nil, nil, 2},
		{[]string{"-m"}, nil, nil, 2},
	} {
		fs := flag.NewFlagSet("cmd", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		n := fs.Int("n", 0, "a number")
		got, err := ParseArgs(fs, c.args, c.names...)
		flagged := slices.Contains(c.args, "-n")
		if ExitCode(err) != c.code || !slices.Equal(got, c.want) || err == nil && flagged && *n != 3 {
			t.Errorf("ParseArgs(%q, %q) = %q, %v (exit %d), -n %d; want %q, exit %d", c.args, c.names, got, err, ExitCode(err), *n, c.want, c.code)
		}
	}
	if ExitCode(errors.New("down")) != 1 || ExitCode(SubcommandError("subcommand", []string{"--help"})) != 0 || ExitCode(SubcommandError("kind", []string{"x"})) != 2 {
		t.Error("ExitCode: want 1 for a failure, 0 for help, 2 for an unknown subcommand")
	}
}
