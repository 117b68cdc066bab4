package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tandem-ai/tandem/atomicfile"
	"github.com/tandem-ai/tandem/batch"
	"github.com/tandem-ai/tandem/pipeline"
)

// batchCommands are the subcommands of `producer batch`.
var batchCommands = map[string]command{
	"create":  {"validate a file and start a batch: create FILE --model M [--template T] [--device cuda] [--wait]", cmdBatchCreate},
	"status":  {"show a batch: status ID", cmdBatchStatus},
	"cancel":  {"cancel a batch: cancel ID", cmdBatchCancel},
	"results": {"print or save a finished batch's results: results ID [--out DIR] [--errors]", cmdBatchResults},
	"list":    {"list batches, newest first: list [--limit N] [--after ID]", cmdBatchList},
}

func cmdBatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return dispatch(ctx, "batch", batchCommands, args, stdout, stderr)
}

// batchFlags are the shared pipeline flags plus the artifact store.
func batchFlags(name string, stderr io.Writer) (*flag.FlagSet, *pipeline.Config, *string) {
	fs, cfg := clientFlags("batch "+name, stderr)
	store := fs.String("artifact-store", os.Getenv("TANDEM_ARTIFACT_STORE"), "artifact store: local, local:DIR, nats or nats:BUCKET (default: nats where NATS is configured, else local) [TANDEM_ARTIFACT_STORE]")
	return fs, cfg, store
}

// batchID parses the arguments of a command on one batch.
func batchID(fs *flag.FlagSet, args []string) (string, error) {
	pos, err := pipeline.ParseArgs(fs, args, "ID")
	if err != nil {
		return "", err
	}
	return pos[0], nil
}

// openBatches connects the batch service: Redis, the artifact store, and
// NATS when configured (progress events; the NATS artifact store).
func openBatches(ctx context.Context, cfg pipeline.Config, storeSpec string, stderr io.Writer) (*batch.Service, func(), error) {
	if err := cfg.Validate(); err != nil {
		return nil, nil, err
	}
	var bus *pipeline.Bus
	if cfg.NATSURL != "" {
		natsOpts, err := cfg.NATSOptions()
		if err != nil {
			return nil, nil, err
		}
		bus, err = pipeline.ConnectBus(ctx, cfg.NATSURL, natsOpts...)
		if err != nil {
			if strings.HasPrefix(storeSpec, "nats") {
				return nil, nil, fmt.Errorf("nats: %w", err)
			}
			fmt.Fprintf(stderr, "warning: NATS unavailable (%v); progress is read from Redis, artifacts from the local store\n", err)
			bus = nil
		}
	}
	svc, err := batch.Open(ctx, cfg, batch.OpenOptions{ArtifactStore: storeSpec, Bus: bus})
	if err != nil {
		if bus != nil {
			bus.Close()
		}
		return nil, nil, err
	}
	return svc, func() {
		_ = svc.Close()
		if bus != nil {
			bus.Close()
		}
	}, nil
}

// multiFlag collects a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func cmdBatchCreate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cfg, store := batchFlags("create", stderr)
	var o batch.CreateOptions
	var meta, stops multiFlag
	fs.StringVar(&o.Model, "model", "", "model: a directory (Hugging Face GPT-2 layout) or builtin:tiny|builtin:small")
	templatePath := fs.String("template", "", "Go text/template file; FILE then holds rows (JSONL or CSV) that fill it")
	fs.StringVar(&o.Format, "format", "", "template rows: jsonl or csv (default: from FILE's extension)")
	fs.Var(&meta, "metadata", "KEY=VALUE to keep with the batch (repeatable, at most 16)")
	fs.StringVar(&o.CompletionWindow, "completion-window", "24h", "time the batch may take; unfinished rows then expire")
	fs.StringVar(&o.Endpoint, "endpoint", "", "the url every request line names: /v1/completions (default), /v1/chat/completions or /v1/embeddings")
	fs.IntVar(&o.ChunkSize, "chunk-size", batch.DefaultChunkSize, "rows per chunk task")
	fs.IntVar(&o.BatchSize, "batch-size", 0, "rows decoded together (default: the chunk size)")
	fs.StringVar(&o.Device, "device", "", "cuda or cuda:N: run the chunks on GPU workers (the gpu queue); cpu or empty: on CPU workers (the default queue)")
	fs.BoolVar(&o.SkipInvalid, "skip-invalid", false, "run the valid lines of a file that has invalid ones (they go to errors.jsonl)")
	fs.BoolVar(&o.PostProcess.Trim, "trim", false, "post-process: trim white space from each text")
	fs.Var(&stops, "stop", "post-process: cut each text at this sequence (repeatable)")
	fs.BoolVar(&o.PostProcess.StripPrompt, "strip-prompt", false, "post-process: remove the prompt when a text starts with it")
	fs.IntVar(&o.PostProcess.MaxChars, "max-chars", 0, "post-process: cap each text at this many characters")
	wait := fs.Bool("wait", false, "follow the batch with a progress bar until it ends, then print where the results are")
	asJSON := fs.Bool("json", false, "print the batch as JSON (with --wait: the final batch)")
	pos, err := pipeline.ParseArgs(fs, args, "FILE") // - for standard input
	if err != nil {
		return err
	}
	file := pos[0]
	if o.Model == "" {
		return errors.New("--model: required (a model directory or builtin:tiny)")
	}
	if _, err := pipeline.QueueForDevice(o.Device, ""); err != nil {
		return fmt.Errorf("--device: %w", err) // before connecting to anything
	}
	o.PostProcess.Stop = stops
	if len(meta) > 0 {
		o.Metadata = map[string]string{}
		for _, kv := range meta {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return fmt.Errorf("--metadata %q: want KEY=VALUE", kv)
			}
			o.Metadata[k] = v
		}
	}
	if *templatePath != "" {
		b, err := readBounded(*templatePath, batch.MaxTemplateBytes)
		if err != nil {
			return fmt.Errorf("--template: %w", err)
		}
		o.Template = string(b)
		if o.Format == "" && strings.EqualFold(filepath.Ext(file), ".csv") {
			o.Format = batch.FormatCSV
		}
	}
	var in io.Reader = os.Stdin
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	svc, closeSvc, err := openBatches(ctx, *cfg, *store, stderr)
	if err != nil {
		return err
	}
	defer closeSvc()
	b, rep, err := svc.Create(ctx, in, o)
	var verr *batch.ValidationError
	if errors.As(err, &verr) {
		fmt.Fprintf(stderr, "%s: %d of %d lines are invalid; nothing was enqueued:\n", file, verr.Report.Invalid, verr.Report.Lines)
		for _, p := range verr.Report.Problems {
			fmt.Fprintf(stderr, "  %s\n", problemLine(file, p))
		}
		if verr.Report.Unlisted > 0 {
			fmt.Fprintf(stderr, "  ... and %d more\n", verr.Report.Unlisted)
		}
		if verr.Report.Valid > 0 {
			fmt.Fprintln(stderr, "fix them, or pass --skip-invalid to run the valid lines and report these in errors.jsonl")
		}
		return errors.New("invalid input")
	}
	if err != nil {
		return err
	}
	if rep != nil && rep.Invalid > 0 {
		fmt.Fprintf(stderr, "skipped %d invalid lines (they will be in errors.jsonl):\n", rep.Invalid)
		for _, p := range rep.Problems {
			fmt.Fprintf(stderr, "  %s\n", problemLine(file, p))
		}
	}
	if !*wait {
		if *asJSON {
			return printJSON(stdout, b)
		}
		fmt.Fprintf(stdout, "batch %s: %d requests in %d chunks, status %s\n", b.ID, b.RequestCounts.Total, b.Chunks, b.Status)
		fmt.Fprintf(stdout, "follow it with: producer batch status %s\n", b.ID)
		return nil
	}
	fmt.Fprintf(stderr, "batch %s: %d requests in %d chunks\n", b.ID, b.RequestCounts.Total, b.Chunks)
	return followBatch(ctx, svc, b.ID, stdout, stderr, *asJSON)
}

// problemLine formats a problem as compilers do: FILE:LINE: code: message.
func problemLine(file string, p batch.Problem) string {
	return fmt.Sprintf("%s:%d: %s: %s", file, p.Line, p.Code, p.Message)
}

// followBatch draws the progress bar until the batch ends, then prints the
// outcome and the result paths.
func followBatch(ctx context.Context, svc *batch.Service, id string, stdout, stderr io.Writer, asJSON bool) error {
	bar := newProgressBar(stderr, isTerminal(stderr))
	var last *batch.Batch
	err := svc.Watch(ctx, id, 500*time.Millisecond, func(b *batch.Batch) bool {
		last = b
		bar.update(b)
		return true
	})
	bar.finish()
	if errors.Is(err, context.Canceled) && last != nil {
		fmt.Fprintf(stderr, "stopped following; the batch goes on: producer batch status %s\n", id)
		return nil
	}
	if err != nil {
		return err
	}
	if asJSON {
		return printJSON(stdout, last)
	}
	c := last.RequestCounts
	fmt.Fprintf(stdout, "batch %s %s: %d completed, %d failed of %d\n", last.ID, last.Status, c.Completed, c.Failed, c.Total)
	fmt.Fprintf(stdout, "output: %s\n", last.OutputFile)
	fmt.Fprintf(stdout, "errors: %s\n", last.ErrorFile)
	if last.Status != batch.StatusCompleted {
		return fmt.Errorf("batch %s ended %s", last.ID, last.Status)
	}
	return nil
}

func cmdBatchStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cfg, store := batchFlags("status", stderr)
	id, err := batchID(fs, args)
	if err != nil {
		return err
	}
	svc, closeSvc, err := openBatches(ctx, *cfg, *store, stderr)
	if err != nil {
		return err
	}
	defer closeSvc()
	b, err := svc.Get(ctx, id)
	if err != nil {
		return err
	}
	return printJSON(stdout, b)
}

func cmdBatchCancel(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cfg, store := batchFlags("cancel", stderr)
	id, err := batchID(fs, args)
	if err != nil {
		return err
	}
	svc, closeSvc, err := openBatches(ctx, *cfg, *store, stderr)
	if err != nil {
		return err
	}
	defer closeSvc()
	b, err := svc.Cancel(ctx, id)
	if err != nil {
		return err
	}
	return printJSON(stdout, b)
}

func cmdBatchResults(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cfg, store := batchFlags("results", stderr)
	outDir := fs.String("out", "", "directory to save output.jsonl and errors.jsonl in (default: print output.jsonl)")
	errorsOnly := fs.Bool("errors", false, "print errors.jsonl instead of output.jsonl")
	id, err := batchID(fs, args)
	if err != nil {
		return err
	}
	svc, closeSvc, err := openBatches(ctx, *cfg, *store, stderr)
	if err != nil {
		return err
	}
	defer closeSvc()
	if *outDir == "" {
		which := batch.FileOutput
		if *errorsOnly {
			which = batch.FileErrors
		}
		rc, _, err := svc.OpenResult(ctx, id, which)
		if err != nil {
			return err
		}
		defer rc.Close()
		_, err = io.Copy(stdout, rc)
		return err
	}
	if err := os.MkdirAll(*outDir, 0o755); err != nil {
		return err
	}
	for _, which := range []string{batch.FileOutput, batch.FileErrors} {
		path := filepath.Join(*outDir, which+".jsonl")
		if err := saveResult(ctx, svc, id, which, path); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: %s\n", which, path)
	}
	return nil
}

// saveResult copies one result file atomically.
func saveResult(ctx context.Context, svc *batch.Service, id, which, path string) error {
	rc, _, err := svc.OpenResult(ctx, id, which)
	if err != nil {
		return err
	}
	defer rc.Close()
	return atomicfile.Write(path, func(w io.Writer) error {
		_, err := io.Copy(w, rc)
		return err
	})
}

func cmdBatchList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cfg, store := batchFlags("list", stderr)
	limit := fs.Int("limit", 20, fmt.Sprintf("batches per page (at most %d)", batch.MaxListLimit))
	after := fs.String("after", "", "list the batches older than this id (the next page)")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := pipeline.ParseArgs(fs, args); err != nil {
		return err
	}
	svc, closeSvc, err := openBatches(ctx, *cfg, *store, stderr)
	if err != nil {
		return err
	}
	defer closeSvc()
	bs, more, err := svc.List(ctx, *after, *limit)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, listPage(bs, more))
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATUS\tMODEL\tDONE/TOTAL\tFAILED\tCREATED")
	for _, b := range bs {
		c := b.RequestCounts
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%d\t%s\n", b.ID, b.Status, b.Model, c.Done(), c.Total, c.Failed,
			time.Unix(b.CreatedAt, 0).Format(time.DateTime))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if more && len(bs) > 0 {
		fmt.Fprintf(stdout, "more: producer batch list --after %s\n", bs[len(bs)-1].ID)
	}
	return nil
}

// batchList is a page of batches, in the OpenAI list shape.
type batchList struct {
	Object  string         `json:"object"`
	Data    []*batch.Batch `json:"data"`
	FirstID string         `json:"first_id,omitempty"`
	LastID  string         `json:"last_id,omitempty"`
	HasMore bool           `json:"has_more"`
}

func listPage(bs []*batch.Batch, more bool) batchList {
	l := batchList{Object: "list", Data: bs, HasMore: more}
	if l.Data == nil {
		l.Data = []*batch.Batch{}
	}
	if len(bs) > 0 {
		l.FirstID, l.LastID = bs[0].ID, bs[len(bs)-1].ID
	}
	return l
}

// readBounded reads a small file whole, refusing larger ones.
func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, limit)
	}
	return b, nil
}
