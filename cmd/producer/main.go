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
	"sort"
	"syscall"
)

// command is one producer subcommand.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var commands = map[string]command{
	"enqueue":  {"enqueue a job: enqueue KIND --args FILE.json", cmdEnqueue},
	"status":   {"show a job: status ID", cmdStatus},
	"cancel":   {"cancel a job: cancel ID", cmdCancel},
	"queues":   {"list queues and their sizes", cmdQueues},
	"serve":    {"run the HTTP API (/v1, /monitoring, /metrics, /healthz)", cmdServe},
	"batch":    {"bulk generation batches: batch create|status|cancel|results|list", cmdBatch},
	"finetune": {"train or fine-tune a model: finetune --data FILE (--model M | --init-config F) [--wait]", cmdFinetune},
	"models":   {"model registry: models list | show NAME | promote NAME@N", cmdModels},
	"feedback": {"publish a feedback event: feedback --user U --item I --event click [--value 1] [--id ID]", cmdFeedback},
	"recs":     {"show a user's recommendations: recs USER [--n 10]", cmdRecs},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "producer:", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stderr)
		if len(args) == 0 {
			return errors.New("a subcommand is required")
		}
		return nil
	}
	c, ok := commands[args[0]]
	if !ok {
		usage(stderr)
		return fmt.Errorf("unknown subcommand %q", args[0])
	}
	return c.run(ctx, args[1:], stdout, stderr)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: producer SUBCOMMAND [flags]   (each subcommand takes -h)")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-9s %s\n", n, commands[n].summary)
	}
}

func lookupEnv(key string) (string, bool) { return os.LookupEnv(key) }
