package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/tandem-ai/tandem/artifact"
	"github.com/tandem-ai/tandem/dataroot"
	"github.com/tandem-ai/tandem/generation"
	"github.com/tandem-ai/tandem/gpu"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/registry"
)

// Deps are the long-lived parts a worker hands to its job handlers.
type Deps struct {
	Logger *slog.Logger
	Models *generation.ModelStore
	Bus    *pipeline.Bus // nil when no NATS URL is configured
	// Redis is the worker's Redis client, for kinds that write serving data
	// (recs-rebuild's publish) or read the interaction log.
	Redis redis.UniversalClient
	// Artifacts keeps the sharded rebuild's snapshots and shard files.
	Artifacts artifact.Store
	// Registry is the model registry the finetune kinds resolve base models
	// in and register their runs with; Models resolves names in the same
	// one, so generation and fine-tuning agree on names.
	Registry *registry.Registry
	// DataDir is the service's own state (pipeline.Config.DataDir):
	// finetune-feedback runs keep their files in <DataDir>/finetune/<run>.
	DataDir string
	// Device is the worker's GPU, which fine-tunes train on; nil: the CPU.
	Device *gpu.Device
	// PromptTemplates parses personalize's templates: the batch template
	// language (batch.PromptTemplates), which jobs cannot import.
	PromptTemplates PromptTemplateParser

	// root confines the files jobs name (paths.go): DataRoot reads it,
	// SetDataRoot installs it.
	root dataroot.Lazy
}

// redisOf is d's Redis client, which every kind that needs Redis beside its
// queue (publishing, serving lists, the interaction log) asks for here.
func redisOf(d *Deps) (redis.UniversalClient, error) {
	if d == nil || d.Redis == nil {
		return nil, errors.New("redis: this worker has no client (Deps.Redis)")
	}
	return d.Redis, nil
}

// registryOf is d's model registry.
func registryOf(d *Deps) (*registry.Registry, error) {
	if d == nil || d.Registry == nil {
		return nil, errors.New("this worker has no model registry (Deps.Registry)")
	}
	return d.Registry, nil
}

// logger is the Deps' logger, or the default one.
func (d *Deps) logger() *slog.Logger {
	if d == nil || d.Logger == nil {
		return slog.Default()
	}
	return d.Logger
}

// NewDeps returns Deps with only a logger and a fresh model store of the
// default bound (generation.DefaultModelCacheBytes), for tests and tools;
// a worker builds its Deps from its configuration (cmd/worker openDeps).
func NewDeps(logger *slog.Logger) *Deps {
	if logger == nil {
		logger = slog.Default()
	}
	return &Deps{Logger: logger, Models: generation.NewModelStoreWith(generation.StoreConfig{
		Limit: generation.DefaultModelCacheBytes, OpenRoot: OpenEnvDataRoot})}
}

// execFunc runs one job kind in-process from command-line flags.
type execFunc func(ctx context.Context, d *Deps, args []string, stdout io.Writer) error

// Kinds that package batch owns: it registers them (batch.Register) and
// holds their args; the catalogue names them and keeps them internal.
const (
	KindBatchChunk    = pipeline.KindPrefixGenerate + "chunk"
	KindBatchFinalize = pipeline.KindPrefixGenerate + "finalize"
	KindWebhook       = "webhook"
)

// batchQueueOnly is why the batch kinds have no `worker exec` of their own.
const batchQueueOnly = "as part of a batch; submit one with `producer batch create FILE --model M`, " +
	"or run a file in-process with `worker exec generate`"

// execQueueOnly is the `worker exec` entry of a kind that runs only from
// the queue, for the reason why: its help says so, and so does its error.
func execQueueOnly(kind, why string) execFunc {
	return func(_ context.Context, _ *Deps, args []string, _ io.Writer) error {
		reason := kind + " runs from the queue " + why
		fs := flag.NewFlagSet("worker exec "+kind, flag.ContinueOnError)
		fs.Usage = func() { fmt.Fprintln(fs.Output(), reason) }
		if _, err := pipeline.ParseArgs(fs, args); err != nil {
			return err
		}
		return errors.New(reason)
	}
}

// kind ties a job kind's registration, producer-side validation and
// `worker exec` entry point together, so a new kind is added in one place.
// register and exec are nil for a kind another package registers.
type kind struct {
	register func(r *pipeline.Registry, d *Deps)
	exec     execFunc
	summary  string
	// paths lists the files a payload of the kind names (CheckPaths); nil
	// for kinds that name none.
	paths func(payload []byte) ([]JobPath, error)
	// internal, when set, makes the kind internal and says who enqueues it:
	// the public API (POST /v1/jobs, GET /v1/kinds) takes and lists only
	// public kinds (CheckPublic), since an internal kind's args are trusted
	// as the pipeline wrote them (a webhook's body is signed as it stands,
	// a chunk's record is believed).
	internal string
	// serving, when set, says whether a payload changes what every user is
	// served (the promoted model, the published lists): the API takes such
	// jobs from admin tokens only (ServingChange).
	serving func(payload []byte) string
}

var kinds = map[string]kind{
	KindGenerate: {
		register: func(r *pipeline.Registry, d *Deps) {
			pipeline.Register[GenerateArgs](r, withPathCheck[GenerateArgs](d, GenerateWorker{Deps: d}), pipeline.KindOptions{Queue: "default", MaxRetry: 5, Timeout: 2 * time.Hour})
		},
		exec:    execGenerate,
		summary: "complete the requests of a JSONL file (OpenAI Batch format)",
		paths:   pathsOf[GenerateArgs],
	},
	KindPing: {
		register: func(r *pipeline.Registry, d *Deps) {
			pipeline.Register[PingArgs](r, withPathCheck[PingArgs](d, PingWorker{Deps: d}), pipeline.KindOptions{Queue: "default", MaxRetry: 3, Timeout: 15 * time.Minute})
		},
		exec:    execPing,
		summary: "diagnostic: wait, optionally record each run, optionally fail",
		paths:   pathsOf[PingArgs],
	},
	KindEval: {
		register: func(r *pipeline.Registry, d *Deps) {
			pipeline.Register[EvalArgs](r, withPathCheck[EvalArgs](d, EvalWorker{Deps: d}), pipeline.KindOptions{Queue: "default", MaxRetry: 3, Timeout: time.Hour})
		},
		exec:    execEval,
		summary: "perplexity of a model over a text file",
		paths:   pathsOf[EvalArgs],
	},
	KindBatchChunk: {
		exec:     execQueueOnly(KindBatchChunk, batchQueueOnly),
		summary:  "generate one chunk of a batch (enqueued by `producer batch create`)",
		internal: "POST /v1/batches and `producer batch create` enqueue it",
	},
	KindBatchFinalize: {
		exec:     execQueueOnly(KindBatchFinalize, batchQueueOnly),
		summary:  "merge a batch's chunk outputs into output.jsonl and errors.jsonl",
		internal: "a batch's last chunk, its cancel and its expiry enqueue it",
	},
	KindWebhook: {
		summary:  "deliver one signed lifecycle event to a webhook URL",
		internal: "a batch's lifecycle events enqueue it, signed",
	},
	KindFinetune: {
		register: func(r *pipeline.Registry, d *Deps) {
			pipeline.Register[FinetuneArgs](r, withPathCheck[FinetuneArgs](d, FinetuneWorker{Deps: d}), pipeline.KindOptions{})
		},
		exec:    execFinetune,
		summary: "train or fine-tune a model on a dataset, with checkpoints and resume",
		paths:   pathsOf[FinetuneArgs],
		serving: servingOf[FinetuneArgs],
	},
	KindFinetuneFeedback: {
		register: func(r *pipeline.Registry, d *Deps) {
			pipeline.Register[FinetuneFeedbackArgs](r, FinetuneFeedbackWorker{Deps: d}, pipeline.KindOptions{})
		},
		exec:    execFinetuneFeedback,
		summary: "fine-tune a registered model on accepted and edited generations; promote if no worse",
		serving: servingOf[FinetuneFeedbackArgs],
	},
	KindRecsRebuild: {
		register: func(r *pipeline.Registry, d *Deps) {
			pipeline.Register[RecsRebuildArgs](r, withPathCheck[RecsRebuildArgs](d, RecsRebuildWorker{Deps: d}), pipeline.KindOptions{Queue: "default", MaxRetry: 3, Timeout: 2 * time.Hour})
		},
		exec:    execRecsRebuild,
		summary: "rebuild recommendations from an interaction log; optionally publish them to Redis",
		paths:   pathsOf[RecsRebuildArgs],
		serving: servingOf[RecsRebuildArgs],
	},
	KindPersonalize: {
		register: func(r *pipeline.Registry, d *Deps) {
			pipeline.Register[PersonalizeArgs](r, withPathCheck[PersonalizeArgs](d, PersonalizeWorker{Deps: d}), pipeline.KindOptions{Queue: "default", MaxRetry: 5, Timeout: 2 * time.Hour})
		},
		exec:    execPersonalize,
		summary: "generate each user's top recommended templates and topics (popular ones for cold starts)",
		paths:   pathsOf[PersonalizeArgs],
	},
	KindInteractive: {
		register: func(r *pipeline.Registry, d *Deps) {
			pipeline.Register[InteractiveArgs](r, InteractiveWorker{Deps: d}, InteractiveArgs{}.KindOptions())
		},
		exec:     execInteractive,
		summary:  "one completion a person waits for, streamed token by token over NATS (POST /v1/completions)",
		internal: "POST /v1/completions enqueues it",
	},
	KindEmbeddings: {
		register: func(r *pipeline.Registry, d *Deps) {
			pipeline.Register[EmbeddingsArgs](r, EmbeddingsWorker{Deps: d}, EmbeddingsArgs{}.KindOptions())
		},
		exec:     execEmbeddings,
		summary:  "embed the inputs of one request a client waits for; the vectors are the task's result (POST /v1/embeddings)",
		internal: "POST /v1/embeddings enqueues it",
	},
	KindRecsFanout: {
		register: func(r *pipeline.Registry, d *Deps) {
			pipeline.Register[RecsFanoutArgs](r, withPathCheck[RecsFanoutArgs](d, RecsFanoutWorker{Deps: d}), pipeline.KindOptions{})
		},
		exec:     execQueueOnly(KindRecsFanout, recsQueueOnly),
		summary:  "start a sharded rebuild: snapshot the interactions, enqueue one shard task per row range (the nightly cron)",
		paths:    pathsOf[RecsFanoutArgs],
		internal: "the scheduler's nightly rebuild enqueues it",
	},
	KindRecsShard: {
		register: func(r *pipeline.Registry, d *Deps) {
			pipeline.Register[RecsShardArgs](r, RecsShardWorker{Deps: d}, pipeline.KindOptions{})
		},
		exec:     execQueueOnly(KindRecsShard, recsQueueOnly),
		summary:  "compute one row range of a sharded rebuild; the last shard enqueues the merge",
		internal: "a rebuild fan-out enqueues it",
	},
	KindRecsMerge: {
		register: func(r *pipeline.Registry, d *Deps) {
			pipeline.Register[RecsMergeArgs](r, RecsMergeWorker{Deps: d}, pipeline.KindOptions{})
		},
		exec:     execQueueOnly(KindRecsMerge, recsQueueOnly),
		summary:  "merge a sharded rebuild and swap the served lists atomically",
		internal: "a rebuild's last shard enqueues it",
	},
	KindRecsUserUpdate: {
		// Runs in the scheduler, beside the live model it needs; workers
		// never take its queue.
		register: func(*pipeline.Registry, *Deps) {},
		exec:     execQueueOnly(KindRecsUserUpdate, recsQueueOnly),
		summary:  "refresh one user's served list from the scheduler's live model (coalesced per user and window)",
		internal: "the scheduler's feedback consumer enqueues it",
	},
	KindRecsEval: {
		// Offline evaluation is a command for people; it has no queue entry.
		register: func(*pipeline.Registry, *Deps) {},
		exec:     execRecsEval,
		summary:  "offline precision/recall/nDCG/MAP/coverage of the recommender (worker exec only)",
		internal: "it runs under `worker exec` only",
	},
}

// RegisterAll registers every job kind on r.
func RegisterAll(r *pipeline.Registry, d *Deps) {
	for _, name := range Names() {
		if k := kinds[name]; k.register != nil {
			k.register(r, d)
		}
	}
}

// Names lists the job kinds in a stable order.
func Names() []string {
	names := make([]string, 0, len(kinds))
	for n := range kinds {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// PublicNames lists the public kinds, those a client of the API may
// enqueue (POST /v1/jobs) and GET /v1/kinds lists, in a stable order.
func PublicNames() []string {
	var names []string
	for _, n := range Names() {
		if kinds[n].internal == "" {
			names = append(names, n)
		}
	}
	return names
}

// Internal says who enqueues an internal kind; "" for a public or unknown
// one.
func Internal(name string) string { return kinds[name].internal }

// CheckPublic refuses a kind the public API must not enqueue: an unknown
// one, or an internal one, which only the pipeline enqueues. The message
// names the field and the public kinds. Operators with Redis credentials
// may still enqueue internal kinds with `producer enqueue`.
func CheckPublic(name string) error {
	k, ok := kinds[name]
	switch {
	case name == "":
		return fmt.Errorf("kind: required (public kinds: %s)", strings.Join(PublicNames(), ", "))
	case !ok:
		return fmt.Errorf("kind: unknown %.64q (public kinds: %s)", name, strings.Join(PublicNames(), ", "))
	case k.internal != "":
		return fmt.Errorf("kind: %q is internal; only the pipeline enqueues it (%s)", name, k.internal)
	}
	return nil
}

// ServingChanger is implemented by the args of kinds that can change what
// every user is served: ServingChange names the field that does, with
// what it changes, or returns "" when these args do not.
type ServingChanger interface{ ServingChange() string }

func servingOf[T ServingChanger](payload []byte) string {
	var a T
	if err := json.Unmarshal(payload, &a); err != nil {
		return "" // ValidatePayload reports it
	}
	return a.ServingChange()
}

// ServingChange says, for a public kind's valid payload, which field makes
// the job change what every user is served ("" when nothing does). The API
// takes such jobs only from tokens with the admin right: a submit token
// may run a fine-tune or a rebuild for itself, not replace the promoted
// model or the served lists.
func ServingChange(name string, payload []byte) string {
	if k, ok := kinds[name]; ok && k.serving != nil {
		return k.serving(payload)
	}
	return ""
}

// Summary is a one-line description of a kind for help texts.
func Summary(name string) string { return kinds[name].summary }

// ValidatePayload decodes payload as the args of the named kind and checks
// it, so a producer refuses bad input before anything is enqueued.
func ValidatePayload(name string, payload []byte) error {
	if k, ok := kinds[name]; !ok {
		return fmt.Errorf("kind: unknown %q (have %v)", name, Names())
	} else if k.register == nil {
		return fmt.Errorf("kind: %q is registered by package batch; check it with batch.Register's registry", name)
	}
	// A registry of every kind, only to decode and validate: its workers
	// never run, so they need no parts.
	r := pipeline.NewRegistry()
	RegisterAll(r, &Deps{})
	return r.Check(name, payload)
}

// Exec runs one kind in-process, outside the queue, on d: `worker exec KIND [flags]`.
func Exec(ctx context.Context, d *Deps, name string, args []string, stdout io.Writer) error {
	k, ok := kinds[name]
	if !ok {
		return fmt.Errorf("unknown job kind %q (have %v)", name, Names())
	}
	if k.exec == nil {
		return fmt.Errorf("%s is run by package batch (`worker exec %s` routes it there)", name, name)
	}
	return k.exec(ctx, d, args, stdout)
}

// keepResult stores v as the task's JSON result, where `producer status`
// shows it; rw is nil when the job runs through `worker exec`.
func keepResult(rw *asynq.ResultWriter, v any) error {
	if rw == nil {
		return nil
	}
	b, _ := json.Marshal(v)
	_, err := rw.Write(b)
	return err
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}
