// Package batch runs bulk content generation: a file of requests (OpenAI
// Batch JSONL, or template rows in JSONL or CSV filled into a Go
// text/template) becomes a batch record in Redis, chunk inputs in the
// artifact store and one asynq task per chunk; workers generate chunks with
// batched decoding and the last one triggers finalisation, which merges
// output.jsonl and errors.jsonl in input order and registers them as files
// of the Files API (package files) before the batch ends.
//
// Pieces, one file each:
//
//   - record.go: the Batch record, its statuses and request counts.
//   - store.go, scripts.go: the record in Redis under pipeline.BatchKeyPrefix;
//     status changes and the per-chunk count advance are Lua scripts, so a
//     chunk re-run after a crash never counts twice.
//   - plan.go, rows.go, template.go: reading and validating input before
//     anything is enqueued; every problem is reported with its line.
//   - service.go: create, get, list, cancel, results, watch (the producer's
//     CLI and HTTP API use it).
//   - kinds.go, webhook.go: the batch's kinds (generate:chunk,
//     generate:finalize, webhook), their args and Register.
//   - runner.go, finalize.go: the generate:chunk and generate:finalize
//     handlers.
//   - event.go, metrics.go: lifecycle events (NATS JetStream, webhooks),
//     progress (core NATS) and Prometheus metrics.
//   - attach.go: wiring for workers and producers.
//   - shared_store.go: workers advertise their artifact store; Create
//     refuses a batch no running worker could read, and a worker missing an
//     input fails the batch at once.
//
// A chunk's life: check the batch (skip when it is cancelling, finalised or
// past its window; skip when this chunk already counted), load the rows,
// generate them with generation.GenerateLines while a watcher polls the batch
// status and cancels the decode if the batch is cancelled or expires, write
// the output to a fresh artifact key, then advance the counters in one Lua
// script that also records which artifact key counted. The script refuses
// once finalisation has sealed the batch, so what finalisation reads never
// changes under it, and takes a repeat of the same call (same key, as
// go-redis sends after a read timeout) as the count it already made.
// Finalisation fails the rows of a counted chunk whose output is missing
// (chunk_output_lost) rather than wait for it.
//
// A batch's device (CreateOptions.Device) only picks its chunks' queue:
// pipeline.QueueGPU for "cuda", where GPU workers take them and
// generation.GenerateLines decodes on their GPU, else QueueDefault. Finalisation
// is on QueueDefault either way.
package batch
