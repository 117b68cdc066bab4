package main

import (
	"testing"

	"github.com/tandem-ai/tandem/internal/workerproc"
)

// TestCommandLine runs the worker binary: help, -h and --help print the
// usage and exit 0, for the server and for `worker exec` and each kind,
// and none starts a server or runs a job; an unknown kind, a bad flag and
// a stray argument exit 2 with the usage and the reason.
func TestCommandLine(t *testing.T) {
	const server, exec = "usage: worker [flags]", "usage: worker exec KIND"
	workerproc.CheckCommandLines(t, workerproc.BuildCmd(t, "worker"), []workerproc.CommandLine{
		{Args: []string{"help"}, Usage: server},
		{Args: []string{"-h"}, Usage: server},
		{Args: []string{"--help"}, Usage: server},
		{Args: []string{"start"}, Code: 2, Usage: server, Err: `unexpected argument "start"`},
		{Args: []string{"--concurrency", "2", "start"}, Code: 2, Usage: server, Err: `unexpected argument "start"`},
		{Args: []string{"--no-such-flag"}, Code: 2, Usage: server, Err: "flag provided but not defined: -no-such-flag"},
		{Args: []string{"exec"}, Code: 2, Usage: exec, Err: "exec: a job kind is required"},
		{Args: []string{"exec", "help"}, Usage: exec},
		{Args: []string{"exec", "--help"}, Usage: exec},
		{Args: []string{"exec", "bogus"}, Code: 2, Usage: exec, Err: `exec: unknown job kind "bogus"`},
		{Args: []string{"exec", "ping", "help"}, Usage: "-sleep-ms"},
		{Args: []string{"exec", "ping", "-h"}, Usage: "-sleep-ms"},
		{Args: []string{"exec", "ping", "now"}, Code: 2, Usage: "-sleep-ms", Err: `unexpected argument "now"`},
		{Args: []string{"exec", "generate", "--in", "a.jsonl", "--out", "b.jsonl", "c.jsonl"}, Code: 2, Usage: "-batch", Err: `unexpected argument "c.jsonl"`},
		{Args: []string{"exec", "generate:embeddings", "--help"}, Usage: "usage: worker exec generate:embeddings [flags] TEXT..."},
		{Args: []string{"exec", "finetune", "--help"}, Usage: "-init-config"},
		// Kinds that run only from the queue say so, as their help too.
		{Args: []string{"exec", "recs:rebuild-shard", "-h"}, Usage: "recs:rebuild-shard runs from the queue as part of a sharded rebuild"},
		{Args: []string{"exec", "generate:chunk"}, Code: 1, Err: "generate:chunk runs from the queue as part of a batch"},
	})
}
