package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tandem-ai/tandem/batch"
	"github.com/tandem-ai/tandem/dataroot"
	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/limits"
	"github.com/tandem-ai/tandem/pipeline"
)

// clientFlags parses the shared pipeline flags plus a subcommand's own.
func clientFlags(name string, stderr io.Writer) (*flag.FlagSet, *pipeline.Config) {
	fs := flag.NewFlagSet("producer "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := pipeline.DefaultConfig()
	cfg.BindFlags(fs)
	return fs, &cfg
}

// cmdEnqueue enqueues one job of any kind, internal ones included: its
// user holds the Redis credentials, so could write the task anyway, and
// operators and the demo use it to start what the pipeline would (a
// sharded rebuild). Clients of the API get the public kinds only.
func cmdEnqueue(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cfg := clientFlags("enqueue", stderr)
	argsFile := fs.String("args", "", "JSON file with the job's args (- for standard input)")
	queue := fs.String("queue", "", "queue (default: the kind's own)")
	device := fs.String("device", "", "cuda: route the job to GPU workers (the gpu queue); cpu or empty: the kind's own queue")
	taskID := fs.String("task-id", "", "task id; a second enqueue with the same id is refused")
	maxRetry := fs.Int("max-retry", -1, fmt.Sprintf("retries before the job is archived, 0..%d (default: the kind's own)", limits.JobMaxRetry))
	pos, err := pipeline.ParseArgs(fs, args, "KIND")
	if err != nil {
		return err
	}
	kind := pos[0]
	if *argsFile == "" {
		return errors.New("--args: required")
	}
	if *maxRetry < -1 || *maxRetry > limits.JobMaxRetry {
		return fmt.Errorf("--max-retry: %d is outside 0..%d", *maxRetry, limits.JobMaxRetry)
	}
	q, err := pipeline.QueueForDevice(*device, *queue)
	if err != nil {
		return fmt.Errorf("--device: %w", err)
	}
	payload, err := readArgsFile(*argsFile)
	if err != nil {
		return err
	}
	if err := checkJobPaths(*cfg, kind, payload, func(string) string { return "--args" }); err != nil {
		return err
	}
	client, err := newClient(*cfg)
	if err != nil {
		return err
	}
	defer client.Close()
	if err := client.Registry().Check(kind, payload); err != nil {
		return fmt.Errorf("%s args: %w", kind, err)
	}
	info, err := enqueueRaw(ctx, client, kind, payload, q, *taskID, *maxRetry)
	if err != nil {
		return err
	}
	return printJSON(stdout, taskView(info))
}

// readArgsFile reads a bounded JSON args file.
func readArgsFile(path string) ([]byte, error) {
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("--args: %w", err)
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, pipeline.MaxPayloadBytes+1))
	if err != nil {
		return nil, fmt.Errorf("--args: %w", err)
	}
	if len(b) > pipeline.MaxPayloadBytes {
		return nil, fmt.Errorf("--args: larger than %d bytes", pipeline.MaxPayloadBytes)
	}
	return b, nil
}

func newClient(cfg pipeline.Config) (*pipeline.Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return pipeline.NewClient(cfg, pipeline.WithRegistry(batch.Kinds()))
}

// checkJobPaths checks the files the args in payload name as the worker
// will resolve them: relative to the data root (--data-root,
// $TANDEM_DATA_ROOT), not to the current directory, and confined to it.
// The worker checks again; checking here, as `producer serve` does, makes a
// path it would refuse an error at once, each naming its flag (flagOf).
// Where the data root is not there to check against, the worker alone
// checks.
func checkJobPaths(cfg pipeline.Config, kind string, payload []byte, flagOf func(field string) string) error {
	root, err := jobs.OpenDataRoot(cfg)
	if err != nil {
		if errors.Is(err, dataroot.ErrRootInReserved) {
			return err
		}
		return nil
	}
	defer root.Close()
	err = jobs.CheckPaths(root, kind, payload)
	joined, ok := err.(interface{ Unwrap() []error }) // one error per refused path
	if !ok {
		return err
	}
	var errs []error
	for _, err := range joined.Unwrap() {
		if pe := (*dataroot.PathError)(nil); errors.As(err, &pe) {
			err = fmt.Errorf("%s: %w", flagOf(pe.Field), err)
		}
		errs = append(errs, err)
	}
	return fmt.Errorf("%w\n(paths are relative to the data root, %s: --data-root, $%s)", errors.Join(errs...), root.Dir(), jobs.EnvDataRoot)
}

// validatedArgs are job args that check themselves.
type validatedArgs interface {
	pipeline.JobArgs
	Validate() error
}

// enqueueArgs validates a and enqueues it with its kind's defaults; the
// caller closes the returned client.
func enqueueArgs(ctx context.Context, cfg pipeline.Config, a validatedArgs, queue, taskID string) (*pipeline.Client, *asynq.TaskInfo, error) {
	payload, err := json.Marshal(a)
	if err != nil {
		return nil, nil, err
	}
	// Paths first: the commands that call this name their flags as the
	// args' fields (--data sets "data").
	if err := checkJobPaths(cfg, a.Kind(), payload, func(field string) string { return "--" + field }); err != nil {
		return nil, nil, err
	}
	if err := a.Validate(); err != nil {
		return nil, nil, fmt.Errorf("%s args: %w", a.Kind(), err)
	}
	client, err := newClient(cfg)
	if err != nil {
		return nil, nil, err
	}
	info, err := enqueueRaw(ctx, client, a.Kind(), payload, queue, taskID, -1)
	if err != nil {
		client.Close()
		return nil, nil, err
	}
	return client, info, nil
}

// enqueueRaw enqueues an already validated payload with the kind's defaults.
func enqueueRaw(ctx context.Context, c *pipeline.Client, kind string, payload []byte, queue, taskID string, maxRetry int) (*asynq.TaskInfo, error) {
	var opts []asynq.Option
	if queue != "" {
		opts = append(opts, asynq.Queue(queue))
	}
	if taskID != "" {
		opts = append(opts, asynq.TaskID(taskID))
	}
	if maxRetry >= 0 {
		opts = append(opts, asynq.MaxRetry(maxRetry))
	}
	opts = append(opts, asynq.Retention(24*time.Hour))
	// A client that did not hear back sends the same job again: a task_id
	// already held by the same kind and args is that job, not a conflict.
	return c.EnqueueRawIdempotent(ctx, kind, payload, opts...)
}

func cmdStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cfg := clientFlags("status", stderr)
	id, err := pipeline.ParseArgs(fs, args, "ID")
	if err != nil {
		return err
	}
	client, err := newClient(*cfg)
	if err != nil {
		return err
	}
	defer client.Close()
	info, err := findTask(client.Inspector(), id[0])
	if err != nil {
		return err
	}
	return printJSON(stdout, taskView(info))
}

func cmdCancel(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cfg := clientFlags("cancel", stderr)
	id, err := pipeline.ParseArgs(fs, args, "ID")
	if err != nil {
		return err
	}
	client, err := newClient(*cfg)
	if err != nil {
		return err
	}
	defer client.Close()
	state, err := cancelTask(client.Inspector(), id[0])
	if err != nil {
		return err
	}
	return printJSON(stdout, map[string]string{"id": id[0], "result": state})
}

func cmdQueues(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cfg := clientFlags("queues", stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := pipeline.ParseArgs(fs, args); err != nil {
		return err
	}
	client, err := newClient(*cfg)
	if err != nil {
		return err
	}
	defer client.Close()
	qs, err := queueViews(client.Inspector())
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, qs)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "QUEUE\tPENDING\tACTIVE\tSCHEDULED\tRETRY\tARCHIVED\tCOMPLETED\tPAUSED")
	for _, q := range qs {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%v\n", q.Queue, q.Pending, q.Active, q.Scheduled, q.Retry, q.Archived, q.Completed, q.Paused)
	}
	return tw.Flush()
}

// TaskView is the JSON shape of a job in the CLI and the API.
type TaskView struct {
	ID            string          `json:"id"`
	Kind          string          `json:"kind"`
	Queue         string          `json:"queue"`
	State         string          `json:"state"`
	Retried       int             `json:"retried"`
	MaxRetry      int             `json:"max_retry"`
	LastError     string          `json:"last_error,omitempty"`
	LastFailedAt  *time.Time      `json:"last_failed_at,omitempty"`
	CompletedAt   *time.Time      `json:"completed_at,omitempty"`
	NextProcessAt *time.Time      `json:"next_process_at,omitempty"`
	Args          json.RawMessage `json:"args,omitempty"`
	Result        json.RawMessage `json:"result,omitempty"`
}

func taskView(t *asynq.TaskInfo) TaskView {
	v := TaskView{ID: t.ID, Kind: t.Type, Queue: t.Queue, State: t.State.String(), Retried: t.Retried, MaxRetry: t.MaxRetry, LastError: t.LastErr}
	if json.Valid(t.Payload) {
		v.Args = jobs.PublicPayload(t.Type, t.Payload)
	}
	if len(t.Result) > 0 && json.Valid(t.Result) {
		v.Result = t.Result
	}
	opt := func(tm time.Time) *time.Time {
		if tm.IsZero() {
			return nil
		}
		return &tm
	}
	v.LastFailedAt, v.CompletedAt, v.NextProcessAt = opt(t.LastFailedAt), opt(t.CompletedAt), opt(t.NextProcessAt)
	return v
}

// errNotFound is returned when no queue holds the task.
var errNotFound = errors.New("no such job")

func findTask(insp *asynq.Inspector, id string) (*asynq.TaskInfo, error) {
	qs, err := insp.Queues()
	if err != nil {
		return nil, err
	}
	for _, q := range qs {
		info, err := insp.GetTaskInfo(q, id)
		if err == nil {
			return info, nil
		}
		if !errors.Is(err, asynq.ErrTaskNotFound) && !errors.Is(err, asynq.ErrQueueNotFound) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("job %s: %w", id, errNotFound)
}

// cancelTask deletes a job that has not started and signals a running one.
func cancelTask(insp *asynq.Inspector, id string) (string, error) {
	info, err := findTask(insp, id)
	if err != nil {
		return "", err
	}
	switch info.State {
	case asynq.TaskStateActive:
		if err := insp.CancelProcessing(id); err != nil {
			return "", err
		}
		return "cancel signalled to the running job", nil
	case asynq.TaskStateCompleted:
		return "", fmt.Errorf("job %s already completed", id)
	default:
		if err := insp.DeleteTask(info.Queue, id); err != nil {
			return "", err
		}
		return "deleted before it ran", nil
	}
}

// QueueView is the JSON shape of a queue.
type QueueView struct {
	Queue     string `json:"queue"`
	Pending   int    `json:"pending"`
	Active    int    `json:"active"`
	Scheduled int    `json:"scheduled"`
	Retry     int    `json:"retry"`
	Archived  int    `json:"archived"`
	Completed int    `json:"completed"`
	Paused    bool   `json:"paused"`
}

func queueViews(insp *asynq.Inspector) ([]QueueView, error) {
	names, err := insp.Queues()
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	out := make([]QueueView, 0, len(names))
	for _, n := range names {
		qi, err := insp.GetQueueInfo(n)
		if err != nil {
			return nil, err
		}
		out = append(out, QueueView{Queue: n, Pending: qi.Pending, Active: qi.Active, Scheduled: qi.Scheduled, Retry: qi.Retry, Archived: qi.Archived, Completed: qi.Completed, Paused: qi.Paused})
	}
	return out, nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}
