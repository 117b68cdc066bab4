// Package artifact stores the files a job produces or consumes by key:
// batch inputs split into chunks, each chunk's output, and a batch's merged
// output.jsonl and errors.jsonl.
//
// A key is a slash-separated relative path such as
// "batches/batch_x/output.jsonl"; Store implementations never let one reach
// outside their root. Two implementations exist:
//
//   - Local keeps objects in a directory (default TANDEM_DATA_DIR/artifacts),
//     confined with os.Root so that no key, "..", absolute path or symbolic
//     link can read or write outside it. Workers on one machine, or on
//     machines sharing that directory, see the same objects.
//   - NATS keeps objects in a JetStream Object Store bucket, so workers on
//     different machines share outputs without a shared disk.
//
// Put is atomic in both: a reader sees the previous object or the whole new
// one, never a partial write. That is what lets a batch chunk write its
// output first and advance the batch's counters afterwards.
package artifact
