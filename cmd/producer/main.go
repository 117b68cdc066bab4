// Command producer submits and inspects Tandem jobs: a CLI for people and
// scripts, and `producer serve`, the HTTP API with the asynqmon UI.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"sort"
	"strings"
	"syscall"

	"github.com/tandem-ai/tandem/pipeline"
)

// command is one producer subcommand.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var commands = map[string]command{
	"enqueue":     {"enqueue a job: enqueue KIND --args FILE.json", cmdEnqueue},
	"status":      {"show a job: status ID", cmdStatus},
	"cancel":      {"cancel a job: cancel ID", cmdCancel},
	"queues":      {"list queues and their sizes", cmdQueues},
	"serve":       {"run the HTTP API (/v1, /monitoring, /metrics, /healthz)", cmdServe},
	"batch":       {"bulk generation batches: batch create|status|cancel|results|list", cmdBatch},
	"finetune":    {"train or fine-tune a model: finetune --data FILE (--model M | --init-config F) [--wait]", cmdFinetune},
	"models":      {"model registry: models list | show NAME | promote NAME@N", cmdModels},
	"feedback":    {"publish feedback: feedback --generation ID --action accept|reject|rate|edit|regenerate [--value N] [--text T], or a raw event: feedback --user U --item I --event click [--value 1]", cmdFeedback},
	"personalize": {"generate users' recommended templates and topics: personalize --users FILE --per-user N --catalog FILE [--wait]", cmdPersonalize},
	"recs":        {"show a user's recommendations: recs USER [--n 10]", cmdRecs},
	"chat":        {"talk to a model through the HTTP API, replies streamed: chat [--url U] [--session S] < lines", cmdChat},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "producer:", err)
	}
	os.Exit(pipeline.ExitCode(err))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return dispatch(ctx, "", commands, args, stdout, stderr)
}

// dispatch runs the subcommand named by args[0] from table; `help CMD...`
// is `CMD... -h`. parent is the enclosing subcommand ("batch"), or "" at the top
// level; it prefixes the usage line and the errors.
func dispatch(ctx context.Context, parent string, table map[string]command, args []string, stdout, stderr io.Writer) error {
	if len(args) > 1 && args[0] == "help" {
		args = append(slices.Clone(args[1:]), "-h")
	}
	if len(args) > 0 {
		if c, ok := table[args[0]]; ok {
			return c.run(ctx, args[1:], stdout, stderr)
		}
	}
	usage(stderr, strings.TrimSpace("producer "+parent), table)
	err := pipeline.SubcommandError("subcommand", args)
	if parent != "" {
		err = fmt.Errorf("%s: %w", parent, err)
	}
	return err
}

func usage(w io.Writer, path string, table map[string]command) {
	fmt.Fprintf(w, "usage: %s SUBCOMMAND [flags]   (each subcommand takes -h)\n", path)
	names := make([]string, 0, len(table))
	width := 0
	for n := range table {
		names = append(names, n)
		width = max(width, len(n))
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-*s %s\n", width+1, n, table[n].summary)
	}
}

func lookupEnv(key string) (string, bool) { return os.LookupEnv(key) }
