// Package limits holds every bound Tandem puts on what it accepts and on
// what one request may cost: sizes, counts, lengths and times, in one place.
// Each package keeps its own names for them (pipeline.MaxEventBytes is
// limits.EventBytes), so call sites read as before, but the value lives
// here, with a comment saying what it bounds.
//
// Conventions: a plain name is an upper bound (EventBytes: at most that many
// bytes); Min... is a lower bound; Default... is a bound that applies when
// nothing else is set and may be raised or lowered by a setting. Sizes are
// in bytes (...Bytes), lengths of strings in bytes (...Len), times are
// time.Duration.
//
// docs/RELIABILITY.md's limits table is generated from this file
// (`go run ./limits/gen`), and `go test ./limits/` fails when the two
// disagree, or when a limit is not exceeded once by a test that checks the
// error names the field (limits/enforced_test.go).
//
// Every limit is one const spec with its own doc comment; a const block's
// doc comment (its first line) is the heading of its section in the table.
// The package imports nothing of Tandem's, so any package may use it.
package limits

import "time"

// Jobs and queues (pipeline/).
const (
	// PayloadBytes bounds a job's JSON arguments, when enqueued and when
	// decoded. Jobs carry references (a batch id, a path); bulk data goes to
	// the artifact store. The bound keeps a bad producer from filling Redis.
	PayloadBytes = 1 << 20
	// KindLen bounds a job kind string; kinds are metric labels and Redis
	// fields.
	KindLen = 128
	// QueueNameLen bounds a queue name.
	QueueNameLen = 64
	// Queues bounds the queues one worker serves (--queues).
	Queues = 32
	// QueueWeight bounds one queue's weight in --queues.
	QueueWeight = 1000
	// Concurrency bounds the jobs one worker runs at once (--concurrency).
	// Like the other settings' bounds, it catches typos (10000 meant as
	// 100), not a hard limit of asynq.
	Concurrency = 4096
	// ShutdownTimeout bounds --shutdown-timeout.
	ShutdownTimeout = time.Hour
	// RetryDelay bounds --retry-base-delay and --retry-max-delay.
	RetryDelay = 24 * time.Hour
	// MinPollInterval is the shortest --poll-interval: the interactive lane polls every few ms.
	MinPollInterval = time.Millisecond
	// PollInterval bounds --poll-interval.
	PollInterval = time.Minute
	// RedisDB bounds the database number of a Redis URL; Redis has 16 by
	// default, the bound catches a port typed into the path.
	RedisDB = 1 << 16
	// DefaultJobRetries bounds the retries of a transient failure when a
	// kind sets none.
	DefaultJobRetries = 10
	// DefaultJobTimeout bounds one run of a job when its kind sets none.
	DefaultJobTimeout = 30 * time.Minute
	// MetricLabelSets bounds the distinct {kind, queue} metric series;
	// kinds come from task types, which a bad producer controls, so further
	// pairs are counted as kind="other".
	MetricLabelSets = 1000
	// ScheduleBytes bounds a schedule file (--schedule).
	ScheduleBytes = 1 << 20
	// ScheduleEntries bounds the entries of a schedule.
	ScheduleEntries = 1000
	// ScheduleEntryNameLen bounds a schedule entry's name.
	ScheduleEntryNameLen = 100
	// ScheduleCatchUp bounds how late a periodic tick may still be
	// enqueued; a scheduler suspended for longer skips the missed ticks
	// instead of enqueuing a burst.
	ScheduleCatchUp = time.Minute
)

// Event bus (pipeline/, NATS).
const (
	// EventBytes bounds one encoded event (its JSON payload, headers
	// excluded). Events carry ids and small facts.
	EventBytes = 64 << 10
	// SubjectTokenLen bounds an id used as a subject token or durable name.
	SubjectTokenLen = 128
	// MsgIDLen bounds a Nats-Msg-Id (the deduplication id).
	MsgIDLen = 256
	// DeadLetterReasonBytes bounds the handler error kept in a dead letter.
	DeadLetterReasonBytes = 4 << 10
	// DeadLetterBytes bounds one dead-letter envelope: an EventBytes
	// payload base64-encoded (4/3) plus the envelope and the reason.
	DeadLetterBytes = 2*EventBytes + 16<<10
	// ConsumerMaxDeliver bounds a consumer's MaxDeliver.
	ConsumerMaxDeliver = 100
	// ConsumerConcurrency bounds the handlers one consumer runs at once.
	ConsumerConcurrency = 256
	// MinConsumerAckWait is the shortest AckWait of a consumer.
	MinConsumerAckWait = 100 * time.Millisecond
	// ConsumerDuration bounds a consumer's AckWait, MaxRetryBackoff and
	// HandlerTimeout.
	ConsumerDuration = 24 * time.Hour
	// EmbeddedNATSStoreBytes bounds the embedded nats-server's JetStream
	// file storage (WithEmbeddedMaxStore changes it).
	EmbeddedNATSStoreBytes = 1 << 30
	// EmbeddedNATSMemoryBytes bounds the embedded nats-server's JetStream
	// memory storage.
	EmbeddedNATSMemoryBytes = 64 << 20
)

// Requests, batches and the HTTP API (jobs/, batch/, cmd/producer/).
const (
	// RequestLineBytes bounds one line of a request or batch input file;
	// longer lines are refused, with their number, without being read
	// whole.
	RequestLineBytes = 1 << 20
	// PromptBytes bounds a request's prompt before tokenisation.
	PromptBytes = 256 << 10
	// CustomIDLen bounds a request's custom_id.
	CustomIDLen = 512
	// RequestLines bounds the request lines of one generate job's input.
	RequestLines = 100_000
	// DecodeRows bounds the rows a generate job decodes together
	// (batch_size), and so its KV cache.
	DecodeRows = 256
	// BatchChunks bounds the chunks of one batch.
	BatchChunks = RequestLines
	// BatchIDLen bounds a batch id.
	BatchIDLen = 64
	// EvalBytes bounds the text an eval job reads.
	EvalBytes = 64 << 20
	// PingSleep bounds the diagnostic ping job's sleep.
	PingSleep = 10 * time.Minute
	// WebhookURLs bounds the webhook targets (TANDEM_WEBHOOK_URLS).
	WebhookURLs = 16
	// WebhookURLLen bounds one webhook URL.
	WebhookURLLen = 2048
	// WebhookTimeout bounds one webhook delivery, connection to response.
	WebhookTimeout = 10 * time.Second
	// WebhookResponseBytes bounds the part of a webhook's response that is
	// read (and dropped) to reuse the connection.
	WebhookResponseBytes = 64 << 10
	// BatchInputBytes bounds a batch input file (the OpenAI Batch API's
	// limit).
	BatchInputBytes = 200 << 20
	// BatchRows bounds the rows (request lines) of one batch.
	BatchRows = RequestLines
	// BatchFileRequests bounds the request lines of an uploaded batch
	// file (POST /v1/files; the OpenAI Batch API's limit).
	BatchFileRequests = 50_000
	// BatchReportedProblems bounds the problems listed when a batch input
	// is refused; the rest are counted.
	BatchReportedProblems = 1000
	// BatchChunkSize bounds the rows of one batch chunk task.
	BatchChunkSize = 1024
	// MinBatchCompletionWindow is the shortest completion window of a
	// batch.
	MinBatchCompletionWindow = time.Minute
	// BatchCompletionWindow bounds a batch's completion window.
	BatchCompletionWindow = 7 * 24 * time.Hour
	// BatchMetadataPairs bounds a batch's metadata pairs (as the OpenAI
	// Batch API).
	BatchMetadataPairs = 16
	// BatchMetadataKeyLen bounds a metadata key.
	BatchMetadataKeyLen = 64
	// BatchMetadataValueLen bounds a metadata value.
	BatchMetadataValueLen = 512
	// BatchListPage bounds one page of GET /v1/batches.
	BatchListPage = 100
	// TemplateBytes bounds a prompt template's source.
	TemplateBytes = 64 << 10
	// TemplateRenderBytes bounds one rendered prompt: the prompt limit.
	TemplateRenderBytes = PromptBytes
	// TemplateRenderSteps bounds the loop iterations and template calls of
	// one rendering.
	TemplateRenderSteps = 100_000
	// TemplateRenderTime bounds the time of one rendering.
	TemplateRenderTime = 200 * time.Millisecond
	// TemplateWorkBytes bounds the bytes a template's functions build in one
	// rendering (print, printf, join, lower and the others; a list from
	// split counts 16 bytes an element). With TemplateRenderBytes it bounds
	// a rendering's memory whatever the template repeats: a small template
	// that prints a large field many times stops there.
	TemplateWorkBytes = 16 * TemplateRenderBytes
	// TemplateFormatWidth bounds a printf width or precision in a template.
	TemplateFormatWidth = 1000
	// PostStops bounds a batch's post-processing stop strings.
	PostStops = 16
	// PostStopLen bounds one post-processing stop string.
	PostStopLen = 256
	// PostMaxChars bounds post-processing's max_chars.
	PostMaxChars = 1 << 20
	// APIJobBodyBytes bounds a JSON request body of the API (POST
	// /v1/jobs): a payload and its envelope.
	APIJobBodyBytes = PayloadBytes + 4<<10
	// APITaskIDLen bounds the task_id a client gives POST /v1/jobs. It is
	// made of A-Z a-z 0-9 _ - only, so it can never take an id the
	// pipeline derives for its own tasks (those hold ':').
	APITaskIDLen = 128
	// JobMaxRetry bounds the max_retry a client asks for (POST /v1/jobs,
	// producer enqueue --max-retry). With backoff capped at RetryDelay,
	// more retries would only keep a failing job around for days.
	JobMaxRetry = 100
	// APIBatchJSONBytes bounds a JSON POST /v1/batches body, inline input
	// included; larger inputs are uploaded raw (up to BatchInputBytes) or
	// named by input_path.
	APIBatchJSONBytes = 64 << 20
	// APIPromoteBodyBytes bounds the body of POST /v1/models/{name}/promote.
	APIPromoteBodyBytes = 4 << 10
	// InteractivePromptBytes bounds the new prompt of an interactive
	// generation (POST /v1/completions, producer chat): a person's turn;
	// longer texts are batch work.
	InteractivePromptBytes = 16 << 10
	// InteractiveTokens bounds an interactive generation's max_tokens: a
	// person reads the reply as it streams.
	InteractiveTokens = 1024
	// InteractiveChoices bounds an interactive generation's n: each choice
	// is one more sequence in the model's engine, streamed to a person who
	// waits; 8 is the CPU engine's default slot count, so every choice of a
	// request shares one prefill and decodes at once. More are batch work.
	InteractiveChoices = 8
	// InteractivePromptChoices bounds the choices of one interactive
	// completion over all its prompts (POST /v1/completions with a list of
	// prompts: prompts × n), so also its prompts: every choice is one more
	// sequence, all submitted to the engine together; 16 is the CPU
	// engine's default slot count, so they decode at once. More are batch
	// work.
	InteractivePromptChoices = 16
	// EmbeddingInputs bounds the inputs of one embeddings request (POST
	// /v1/embeddings, a batch line), as OpenAI does. Each input is also
	// bounded by the model's context, in tokens.
	EmbeddingInputs = 2048
	// APIEmbeddingsBodyBytes bounds a POST /v1/embeddings body. Its inputs
	// travel to a worker in the job's payload, which PayloadBytes bounds
	// once encoded: a body whose inputs do not fit is refused too.
	APIEmbeddingsBodyBytes = PayloadBytes
	// APIHeaderTime bounds the time a client may take to send a request's
	// headers (http.Server.ReadHeaderTimeout).
	APIHeaderTime = 10 * time.Second
	// APIBodyGrace is the time a request body may take before
	// MinAPIBodyRate applies to it.
	APIBodyGrace = 10 * time.Second
	// MinAPIBodyRate is the slowest a request body may arrive, in bytes a
	// second on average since the request began, once APIBodyGrace has
	// passed; a slower one is answered 408 and its connection closed, so
	// clients trickling bodies cannot hold connections and handlers.
	MinAPIBodyRate = 8 << 10
	// APIBodyDrainTime bounds the time spent reading the rest of a body a
	// handler left unread (net/http reads up to 256 KB of it to reuse the
	// connection); past it the connection is closed.
	APIBodyDrainTime = time.Second
	// APIRecsUserLen bounds a user id in a recommendations URL.
	APIRecsUserLen = 256
	// LossCurveBytes bounds a loss curve image the API serves.
	LossCurveBytes = 4 << 20
	// ArtifactKeyLen bounds an artifact key.
	ArtifactKeyLen = 1024
	// ModelNameLen bounds a model name in the registry.
	ModelNameLen = 64
	// RunMarkerBytes bounds a fine-tune run's registration record
	// (registered.json), read back when a job is retried.
	RunMarkerBytes = 64 << 10
	// DefaultModelCacheBytes bounds the model parameters a worker keeps
	// loaded (TANDEM_MODEL_CACHE_BYTES changes it); least recently used
	// models are dropped past it.
	DefaultModelCacheBytes = 4 << 30
)

// Sampling and models (model/).
const (
	// MaxTokens bounds a request's max_tokens; the model's context window
	// bounds it further.
	MaxTokens = 8192
	// Choices bounds a request's n, completions per prompt.
	Choices = 16
	// StopSequences bounds a request's stop sequences.
	StopSequences = 4
	// StopBytes bounds one stop sequence.
	StopBytes = 256
	// Logprobs bounds a request's logprobs, alternatives reported per token.
	Logprobs = 5
	// DefaultDecodeRows bounds the rows (prompts times choices) decoded
	// together when a caller sets none.
	DefaultDecodeRows = 16
	// SafetensorsHeaderBytes bounds a safetensors file's JSON header
	// (GPT-2 XL's is about 60 KB).
	SafetensorsHeaderBytes = 100 << 20
	// TensorDims bounds the rank of one tensor in a safetensors file.
	TensorDims = 8
	// ModelConfigBytes bounds a model's config.json (real ones are about
	// 1 KB).
	ModelConfigBytes = 1 << 20
	// ModelLayers bounds n_layer of a model config.
	ModelLayers = 256
	// ModelHeads bounds n_head.
	ModelHeads = 256
	// ModelEmbd bounds n_embd.
	ModelEmbd = 1 << 14
	// ModelPositions bounds n_positions, the context window.
	ModelPositions = 1 << 16
	// ModelVocab bounds vocab_size.
	ModelVocab = 1 << 20
	// ModelParams bounds the parameters of a model, so the parameters,
	// gradients and AdamW moments stay addressable (GPT-2 XL has 1.56e9).
	ModelParams = 4_000_000_000
	// ActivationBytes bounds the memory one forward pass (with backward's
	// scratch) may allocate for a batch.
	ActivationBytes = 32 << 30
	// KVCacheBytes bounds one KV cache's key/value storage.
	KVCacheBytes = 32 << 30
	// ROUGETokens bounds the tokens of one text ROUGE-L compares; its LCS
	// table costs the product of two lengths.
	ROUGETokens = 20_000
)

// Fine-tuning (finetune/).
const (
	// DatasetBytes bounds a fine-tuning dataset file.
	DatasetBytes = 256 << 20
	// DatasetLineBytes bounds one dataset line: a text example or a JSONL
	// record.
	DatasetLineBytes = 64 << 10
	// DatasetExamples bounds the examples of a dataset.
	DatasetExamples = 2_000_000
	// MinDatasetExamples is the fewest examples a dataset may have: one
	// each for train, dev and test.
	MinDatasetExamples = 3
	// Epochs bounds a fine-tune's epochs.
	Epochs = 1000
	// TrainBatchSize bounds rows per micro-batch of a fine-tune.
	TrainBatchSize = 1024
	// GradAccum bounds micro-batches per optimizer step.
	GradAccum = 1024
	// SeqLen bounds tokens per training row (n_positions bounds it too).
	SeqLen = 8192
	// GenEval bounds the test generations a fine-tune scores with BLEU and
	// ROUGE-L.
	GenEval = 1000
	// TotalSteps bounds the optimizer steps of one run.
	TotalSteps = 10_000_000
	// CheckpointHeaderBytes bounds a checkpoint's JSON header (the loss
	// history lives there).
	CheckpointHeaderBytes = 64 << 20
	// FeedbackIDLen bounds a feedback sample's generation id.
	FeedbackIDLen = 128
	// FeedbackTextBytes bounds a feedback sample's prompt and completion,
	// each.
	FeedbackTextBytes = 16 << 10
)

// Recommendations and the generation loop (recsys/, recsys/live/, loop/, feedback/).
const (
	// RecsLineBytes bounds one line of an interaction file, newline
	// excluded (recsys.Limits.MaxLineBytes changes it).
	RecsLineBytes = 64 << 10
	// RecsIDBytes bounds a user, item, kind or event id.
	RecsIDBytes = 256
	// RecsUsers bounds distinct users (their ids are int32).
	RecsUsers = 50_000_000
	// RecsItems bounds distinct items.
	RecsItems = 10_000_000
	// RecsCells bounds distinct (user, item) pairs.
	RecsCells = 1<<31 - 1
	// RecsAbsValue bounds the absolute value of one event.
	RecsAbsValue = 1e9
	// RecsKinds bounds distinct item kinds.
	RecsKinds = 4096
	// RecsK bounds the neighbours the similarity tables keep per row.
	RecsK = 10_000
	// RecsNeighbors bounds a rebuild job's neighbors (K).
	RecsNeighbors = 1000
	// RecsTop bounds a rebuild job's list length per user, and recs-eval's
	// k.
	RecsTop = 1000
	// RecsPerRequest bounds the recommendations one request asks for.
	RecsPerRequest = 10_000
	// RecsEvalEvents bounds the events recs-eval holds in memory for its
	// split.
	RecsEvalEvents = 20_000_000
	// RecsEventHalfLivesAhead bounds how far after the decay anchor an
	// event's time may lie, in half-lives, so 2^x stays inside float32.
	RecsEventHalfLivesAhead = 64
	// RecsRefreshPerEvent bounds the other users' lists one feedback event
	// recomputes; the rest wait for the next rebuild.
	RecsRefreshPerEvent = 200
	// RecordTextBytes bounds a generation record's prompt and text, each;
	// longer text is cut at a rune boundary when stored.
	RecordTextBytes = 32 << 10
	// RecordIDBytes bounds a generation record's ids (id, user, session,
	// template, topic, model).
	RecordIDBytes = 256
	// RatingRevisions bounds the re-ratings of one generation: each is an
	// event every feedback consumer keeps (the interaction log until the
	// next rebuild, dedupe markers for 8 days). Past it a re-rating is
	// refused and the rating stays as it is.
	RatingRevisions = 100
	// MinFeedbackRating is the lowest rating a feedback event may carry
	// (event "rating", and its "previous" in a revision).
	MinFeedbackRating = 1
	// FeedbackRating is the highest rating a feedback event may carry: the
	// documented scale is MinFeedbackRating..FeedbackRating.
	FeedbackRating = 5
	// FeedbackCount bounds the value of a feedback event that counts
	// occurrences (view, click, purchase, accepted, edited, rejected,
	// regenerated): one event stands for at most this many, so one client
	// cannot outweigh everyone else's lists with a single number.
	FeedbackCount = 100
	// FeedbackDwellSeconds bounds the value of a "dwell" feedback event:
	// an hour on an item (at the default weight, 60 views).
	FeedbackDwellSeconds = 3600
)

// API authentication (auth/).
const (
	// TokenFileBytes bounds the API token file.
	TokenFileBytes = 1 << 20
	// Tokens bounds the tokens in the file; each request is compared with
	// all of them.
	Tokens = 10_000
	// MinTokenLen is the shortest token the file may hold in clear:
	// shorter secrets are guessable.
	MinTokenLen = 16
	// TokenLen bounds a token, in the file or in a request.
	TokenLen = 4096
	// TokenNameLen bounds a token's name.
	TokenNameLen = 64
)
