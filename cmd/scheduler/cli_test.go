package main

import (
	"testing"

	"github.com/tandem-ai/tandem/internal/workerproc"
)

// TestCommandLine runs the scheduler binary: help, -h and --help print the
// usage and exit 0 without starting the scheduler; a bad flag and a stray
// argument exit 2 with the usage and the reason.
func TestCommandLine(t *testing.T) {
	const usage = "Usage of scheduler"
	workerproc.CheckCommandLines(t, workerproc.BuildCmd(t, "scheduler"), []workerproc.CommandLine{
		{Args: []string{"help"}, Usage: usage},
		{Args: []string{"-h"}, Usage: usage},
		{Args: []string{"--help"}, Usage: usage},
		{Args: []string{"run"}, Code: 2, Usage: usage, Err: `unexpected argument "run"`},
		{Args: []string{"--recs-rebuild", "off", "now"}, Code: 2, Usage: usage, Err: `unexpected argument "now"`},
		{Args: []string{"--no-such-flag"}, Code: 2, Usage: usage, Err: "flag provided but not defined: -no-such-flag"},
	})
}
