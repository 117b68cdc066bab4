package jobs

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/tandem-ai/tandem/dataroot"
	"github.com/tandem-ai/tandem/limits"
	"github.com/tandem-ai/tandem/pipeline"
)

// PingArgs is a diagnostic job: it waits and, when asked, appends a line to
// a file each time it runs. Operators use it to check that a deployment
// takes work end to end; the crash tests use it to see how often a job ran.
type PingArgs struct {
	SleepMS int    `json:"sleep_ms,omitempty"` // how long to wait, honouring cancellation
	Record  string `json:"record,omitempty"`   // file in the data root to append "<attempt>\n" to on every run
	Fail    string `json:"fail,omitempty"`     // "" (succeed), "transient" or "permanent"
}

// KindPing is the stable kind string of PingArgs.
const KindPing = "ping"

// MaxPingSleep bounds how long a ping may hold a worker slot.
const MaxPingSleep = limits.PingSleep

// Kind implements pipeline.JobArgs.
func (PingArgs) Kind() string { return KindPing }

// jobPaths implements pathArgs.
func (a PingArgs) jobPaths() []JobPath { return []JobPath{{"record", a.Record}} }

// Validate implements pipeline.Validator.
func (a PingArgs) Validate() error {
	if a.SleepMS < 0 || time.Duration(a.SleepMS)*time.Millisecond > MaxPingSleep {
		return fmt.Errorf("sleep_ms: %d is outside 0..%d", a.SleepMS, MaxPingSleep.Milliseconds())
	}
	switch a.Fail {
	case "", "transient", "permanent":
	default:
		return fmt.Errorf("fail: %q is not one of \"\", transient, permanent", a.Fail)
	}
	if a.Record != "" {
		return dataroot.CheckPath("record", a.Record)
	}
	return nil
}

// PingWorker runs ping jobs.
type PingWorker struct{ Deps *Deps }

// Work implements pipeline.Worker.
func (w PingWorker) Work(ctx context.Context, job *pipeline.Job[PingArgs]) error {
	a := job.Args
	if a.Record != "" {
		root, err := w.Deps.DataRoot()
		if err != nil {
			return err
		}
		f, err := root.OpenFile("record", a.Record, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return pipeline.Permanent(err)
		}
		_, err = fmt.Fprintf(f, "%d\n", job.Retried)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Duration(a.SleepMS) * time.Millisecond):
	}
	switch a.Fail {
	case "transient":
		return errors.New("ping: asked to fail (transient)")
	case "permanent":
		return pipeline.Permanent(errors.New("ping: asked to fail (permanent)"))
	}
	return nil
}

func execPing(ctx context.Context, d *Deps, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("worker exec ping", flag.ContinueOnError)
	var a PingArgs
	fs.IntVar(&a.SleepMS, "sleep-ms", 0, "milliseconds to wait")
	fs.StringVar(&a.Record, "record", "", "file in the data root to append the attempt number to")
	if _, err := pipeline.ParseArgs(fs, args); err != nil {
		return err
	}
	if err := a.Validate(); err != nil {
		return err
	}
	if err := (PingWorker{Deps: d}).Work(ctx, &pipeline.Job[PingArgs]{Args: a}); err != nil {
		return err
	}
	return writeJSON(stdout, map[string]string{"pong": "ok"})
}
