package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/tandem-ai/tandem/internal/workerproc"
	"github.com/tandem-ai/tandem/pipeline"
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
		// Refused before anything connects: the job would refuse it too.
		{Args: []string{"--interactions", "../log.csv"}, Code: 1, Err: `--interactions: field "interactions": path "../log.csv" escapes the data root`},
	})
}

// TestInteractionsResolveInTheDataRoot: the live model reads --interactions
// where the nightly rebuild's job, which gets the same value, reads it: in
// the data root, not in the scheduler's current directory.
func TestInteractionsResolveInTheDataRoot(t *testing.T) {
	cfg := pipeline.DefaultConfig()
	cfg.DataRoot, cfg.DataDir = t.TempDir(), filepath.Join(t.TempDir(), "state")
	for p, want := range map[string]string{
		"log.csv":                               filepath.Join(cfg.DataRoot, "log.csv"),
		filepath.Join(cfg.DataRoot, "in/a.csv"): filepath.Join(cfg.DataRoot, "in/a.csv"),
		"":                                      "",
	} {
		if got, err := interactionsPath(cfg, p); err != nil || got != want {
			t.Errorf("--interactions %q: %q, %v; want %q", p, got, err, want)
		}
	}
	elsewhere := filepath.Join(t.TempDir(), "log.csv")
	if _, err := interactionsPath(cfg, elsewhere); err == nil || !strings.Contains(err.Error(), "--interactions: field \"interactions\": path \""+elsewhere+"\" escapes the data root") {
		t.Errorf("--interactions outside the data root: %v", err)
	}
}
