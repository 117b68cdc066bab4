package main

import (
	"testing"

	"github.com/tandem-ai/tandem/internal/workerproc"
)

// TestCommandLine runs the producer binary: help, -h and --help print the
// usage and exit 0 on every command, and none starts a server or dials
// Redis; an unknown subcommand, a bad flag, and an argument missing or one
// too many exit 2 with the usage and the reason.
func TestCommandLine(t *testing.T) {
	const top, models = "usage: producer SUBCOMMAND", "usage: producer models SUBCOMMAND"
	workerproc.CheckCommandLines(t, workerproc.BuildCmd(t, "producer"), []workerproc.CommandLine{
		{Args: []string{"help"}, Usage: top},
		{Args: []string{"-h"}, Usage: top},
		{Args: []string{"--help"}, Usage: top},
		{Args: nil, Code: 2, Usage: top, Err: "a subcommand is required"},
		{Args: []string{"bogus"}, Code: 2, Usage: top, Err: `unknown subcommand "bogus"`},
		{Args: []string{"help", "chat"}, Usage: "usage: producer chat [flags] < lines"},
		{Args: []string{"chat", "--help"}, Usage: "usage: producer chat [flags] < lines"},
		{Args: []string{"chat", "help"}, Usage: "usage: producer chat [flags] < lines"},
		{Args: []string{"chat", "hello"}, Code: 2, Usage: "usage: producer chat", Err: `unexpected argument "hello"`},
		{Args: []string{"serve", "help"}, Usage: "-api-tokens"},
		{Args: []string{"serve", "-h"}, Usage: "-api-tokens"},
		{Args: []string{"serve", "now"}, Code: 2, Usage: "-api-tokens", Err: `unexpected argument "now"`},
		{Args: []string{"serve", "--no-such-flag"}, Code: 2, Usage: "-api-tokens", Err: "flag provided but not defined: -no-such-flag"},
		{Args: []string{"status", "-h"}, Usage: "usage: producer status [flags] ID"},
		{Args: []string{"status"}, Code: 2, Usage: "usage: producer status [flags] ID", Err: "ID: required"},
		{Args: []string{"status", "a", "--json", "b"}, Code: 2, Usage: "usage: producer status [flags] ID", Err: "flag provided but not defined: -json"},
		{Args: []string{"cancel", "a", "b"}, Code: 2, Usage: "usage: producer cancel [flags] ID", Err: `unexpected argument "b"`},
		{Args: []string{"enqueue", "--help"}, Usage: "usage: producer enqueue [flags] KIND"},
		{Args: []string{"queues", "all"}, Code: 2, Usage: "-json", Err: `unexpected argument "all"`},
		{Args: []string{"recs", "help"}, Usage: "usage: producer recs [flags] USER"},
		{Args: []string{"finetune", "-h"}, Usage: "-init-config"},
		{Args: []string{"finetune", "data.txt"}, Code: 2, Usage: "-init-config", Err: `unexpected argument "data.txt"`},
		{Args: []string{"personalize", "--help"}, Usage: "-catalog"},
		{Args: []string{"feedback", "help"}, Usage: "-generation"},
		{Args: []string{"batch"}, Code: 2, Usage: "usage: producer batch SUBCOMMAND", Err: "batch: a subcommand is required"},
		{Args: []string{"batch", "help"}, Usage: "usage: producer batch SUBCOMMAND"},
		{Args: []string{"help", "batch", "create"}, Usage: "usage: producer batch create [flags] FILE"},
		{Args: []string{"batch", "create", "-h"}, Usage: "usage: producer batch create [flags] FILE"},
		{Args: []string{"batch", "create", "a.jsonl", "b.jsonl", "--model", "builtin:tiny"}, Code: 2, Usage: "usage: producer batch create", Err: `unexpected argument "b.jsonl"`},
		{Args: []string{"batch", "list", "--help"}, Usage: "-limit"},
		{Args: []string{"batch", "bogus"}, Code: 2, Usage: "usage: producer batch SUBCOMMAND", Err: `batch: unknown subcommand "bogus"`},
		{Args: []string{"models", "--help"}, Usage: models},
		{Args: []string{"models", "bogus"}, Code: 2, Usage: models, Err: `models: unknown subcommand "bogus"`},
		{Args: []string{"models", "show", "help"}, Usage: "usage: producer models show [flags] NAME[@N]"},
		{Args: []string{"models", "list", "all"}, Code: 2, Usage: "Usage of producer models list", Err: `unexpected argument "all"`},
	})
}
