package batch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tandem-ai/tandem/files"
	"github.com/tandem-ai/tandem/generation"
	"github.com/tandem-ai/tandem/limits"
	"github.com/tandem-ai/tandem/pipeline"
)

// Redis keys. Every key of a batch starts with pipeline.BatchKeyPrefix and
// carries the id in braces, a Redis Cluster hash tag, so the record and its
// chunk hash share a slot and one script can touch both.
func recordKey(id string) string { return pipeline.BatchKeyPrefix + "{" + id + "}" }
func chunksKey(id string) string { return pipeline.BatchKeyPrefix + "{" + id + "}:chunks" }

// indexKey orders every batch by creation time, for listing.
const indexKey = pipeline.BatchKeyPrefix + "index"

// ErrNotFound is wrapped by errors for ids that name no batch.
var ErrNotFound = errors.New("batch: not found")

// ErrConflict is wrapped by errors for changes the batch's status forbids
// (cancelling a completed batch, say).
var ErrConflict = errors.New("batch: conflict")

// Store keeps batch records in Redis.
type Store struct {
	rdb redis.UniversalClient
	now func() time.Time
}

// NewStore returns a store on rdb (not closed by the store).
func NewStore(rdb redis.UniversalClient) *Store { return &Store{rdb: rdb, now: time.Now} }

// Create writes a new record and indexes it. The id must be new; a
// repeat of this call by go-redis is not mistaken for a clash.
func (s *Store) Create(ctx context.Context, b *Batch) error {
	fields, err := encodeRecord(b)
	if err != nil {
		return err
	}
	args := append([]any{randomHex(8)}, fields...)
	ok, err := scriptCreate.Run(ctx, s.rdb, []string{recordKey(b.ID)}, args...).Int()
	if err != nil {
		return fmt.Errorf("batch %s: create: %w", b.ID, err)
	}
	if ok != 1 {
		return fmt.Errorf("batch %s: %w: id in use", b.ID, ErrConflict)
	}
	// Separate from the script: the index is one key for all batches, in
	// another Cluster slot. A record missing from the index is only missing
	// from listings.
	if err := s.rdb.ZAdd(ctx, indexKey, redis.Z{Score: float64(s.now().UnixMilli()), Member: b.ID}).Err(); err != nil {
		return fmt.Errorf("batch %s: index: %w", b.ID, err)
	}
	return nil
}

// Get reads a record.
func (s *Store) Get(ctx context.Context, id string) (*Batch, error) {
	if err := ValidateID(id); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotFound, err)
	}
	pipe := s.rdb.Pipeline()
	all := pipe.HGetAll(ctx, recordKey(id))
	done := pipe.HLen(ctx, chunksKey(id))
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("batch %s: %w", id, err)
	}
	if len(all.Val()) == 0 {
		return nil, fmt.Errorf("batch %s: %w", id, ErrNotFound)
	}
	b, err := decodeRecord(all.Val())
	if err != nil {
		return nil, fmt.Errorf("batch %s: %w", id, err)
	}
	b.ChunksDone = int(done.Val())
	return b, nil
}

// State is the little a running chunk polls: status and window end.
func (s *Store) State(ctx context.Context, id string) (Status, int64, error) {
	v, err := s.rdb.HMGet(ctx, recordKey(id), "status", "expires_at").Result()
	if err != nil {
		return "", 0, fmt.Errorf("batch %s: %w", id, err)
	}
	st, _ := v[0].(string)
	if st == "" {
		return "", 0, fmt.Errorf("batch %s: %w", id, ErrNotFound)
	}
	exp, _ := v[1].(string)
	e, _ := strconv.ParseInt(exp, 10, 64)
	return Status(st), e, nil
}

// Transition moves the batch to status to, stamping to's time, when it is
// in one of from; otherwise it returns an error wrapping ErrConflict that
// names the status found (ErrNotFound for a missing batch).
func (s *Store) Transition(ctx context.Context, id string, to Status, from ...Status) error {
	args := []any{string(to), s.now().Unix(), randomHex(8)}
	for _, f := range from {
		args = append(args, string(f))
	}
	res, err := scriptTransition.Run(ctx, s.rdb, []string{recordKey(id)}, args...).Text()
	switch {
	case err != nil:
		return fmt.Errorf("batch %s: %s: %w", id, to, err)
	case res == "":
		return fmt.Errorf("batch %s: %w", id, ErrNotFound)
	case res != "ok":
		return fmt.Errorf("batch %s is %s: %w: cannot become %s", id, res, ErrConflict, to)
	}
	return nil
}

// SetErrors records batch-level errors (why it failed).
func (s *Store) SetErrors(ctx context.Context, id string, errs []Problem) error {
	b, err := json.Marshal(errs)
	if err != nil {
		return err
	}
	return s.rdb.HSet(ctx, recordKey(id), "errors", string(b)).Err()
}

// ChunkResult is what counting a chunk did.
type ChunkResult struct {
	// Counted is true when this call counted the chunk; Duplicate when it
	// had already counted; both false when the batch refused (sealed).
	Counted, Duplicate bool
	ChunksDone, Chunks int
	Completed, Failed  int
}

// Last reports whether every chunk has now counted.
func (r ChunkResult) Last() bool { return r.Chunks > 0 && r.ChunksDone >= r.Chunks }

// ChunkDone counts chunk once: it records outKey as the chunk's output and
// adds the chunk's row counts, atomically, unless the chunk already counted
// or the batch is sealed.
func (s *Store) ChunkDone(ctx context.Context, id string, chunk int, outKey string, completed, failed int) (ChunkResult, error) {
	v, err := scriptChunkDone.Run(ctx, s.rdb, []string{recordKey(id), chunksKey(id)}, chunk, outKey, completed, failed).Int64Slice()
	if err != nil {
		return ChunkResult{}, fmt.Errorf("batch %s chunk %d: count: %w", id, chunk, err)
	}
	if len(v) != 5 {
		return ChunkResult{}, fmt.Errorf("batch %s chunk %d: count: script returned %v", id, chunk, v)
	}
	if v[0] == -1 {
		return ChunkResult{}, fmt.Errorf("batch %s: %w", id, ErrNotFound)
	}
	return ChunkResult{Counted: v[0] == 1, Duplicate: v[0] == 2, ChunksDone: int(v[1]), Chunks: int(v[2]), Completed: int(v[3]), Failed: int(v[4])}, nil
}

// ChunkOutput returns the output key recorded for chunk, "" while the
// chunk has not counted.
func (s *Store) ChunkOutput(ctx context.Context, id string, chunk int) (string, error) {
	key, err := s.rdb.HGet(ctx, chunksKey(id), strconv.Itoa(chunk)).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("batch %s chunk %d: %w", id, chunk, err)
	}
	return key, nil
}

// ChunkOutputs returns the output key of every counted chunk.
func (s *Store) ChunkOutputs(ctx context.Context, id string) (map[int]string, error) {
	m, err := s.rdb.HGetAll(ctx, chunksKey(id)).Result()
	if err != nil {
		return nil, fmt.Errorf("batch %s: chunks: %w", id, err)
	}
	out := make(map[int]string, len(m))
	for k, v := range m {
		n, err := strconv.Atoi(k)
		if err != nil {
			return nil, fmt.Errorf("batch %s: chunk field %q: %w", id, k, err)
		}
		out[n] = v
	}
	return out, nil
}

// SealResult is what Seal found.
type SealResult struct {
	// Sealed is true when the batch is (now) finalizing; Final is the
	// status finalisation ends in.
	Sealed bool
	Final  Status
	// Terminal is set when the batch had already ended, with its status.
	Terminal Status
	// NotReady is set when nothing asks for finalisation yet (chunks left,
	// no cancel, window open), with the status found.
	NotReady Status
}

// Seal starts finalisation (see scriptSeal).
func (s *Store) Seal(ctx context.Context, id string, expire bool) (SealResult, error) {
	reason := ""
	if expire {
		reason = "expire"
	}
	return s.seal(ctx, id, reason)
}

// SealFailed seals a batch that is in progress as failed, whatever its
// chunks' progress: one of its inputs cannot be read, so it can never
// complete. A batch already sealed or cancelling keeps its final status.
func (s *Store) SealFailed(ctx context.Context, id string) (SealResult, error) {
	return s.seal(ctx, id, "fail")
}

func (s *Store) seal(ctx context.Context, id, reason string) (SealResult, error) {
	v, err := scriptSeal.Run(ctx, s.rdb, []string{recordKey(id), chunksKey(id)}, reason, s.now().Unix()).StringSlice()
	if err != nil {
		return SealResult{}, fmt.Errorf("batch %s: seal: %w", id, err)
	}
	if len(v) != 2 {
		return SealResult{}, fmt.Errorf("batch %s: seal: script returned %v", id, v)
	}
	switch v[0] {
	case "sealed":
		return SealResult{Sealed: true, Final: Status(v[1])}, nil
	case "terminal":
		return SealResult{Terminal: Status(v[1])}, nil
	case "not_ready":
		return SealResult{NotReady: Status(v[1])}, nil
	}
	return SealResult{}, fmt.Errorf("batch %s: %w", id, ErrNotFound)
}

// Finish ends a finalizing batch with its final status, counts and files.
func (s *Store) Finish(ctx context.Context, id string, st Status, c Counts, outKey, errKey string) error {
	res, err := scriptFinish.Run(ctx, s.rdb, []string{recordKey(id)}, string(st), s.now().Unix(), c.Completed, c.Failed, outKey, errKey).Text()
	if err != nil {
		return fmt.Errorf("batch %s: finish: %w", id, err)
	}
	if res != "ok" {
		return fmt.Errorf("batch %s is %q: %w: cannot finish as %s", id, res, ErrConflict, st)
	}
	return nil
}

// markResultFiles records that the batch's result files are registered
// in the Files API (Service.registerResultFiles).
func (s *Store) markResultFiles(ctx context.Context, id string) error {
	if err := scriptMarkResultFiles.Run(ctx, s.rdb, []string{recordKey(id)}).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("batch %s: result files: %w", id, err)
	}
	return nil
}

// MarkAnnounced records that the batch's lifecycle event went out, and
// reports whether this call was the first (a repeat of the call by
// go-redis still is).
func (s *Store) MarkAnnounced(ctx context.Context, id string) (bool, error) {
	token := strconv.FormatInt(s.now().Unix(), 10) + "-" + randomHex(6)
	n, err := scriptAnnounce.Run(ctx, s.rdb, []string{recordKey(id)}, token).Int()
	return n == 1, err
}

// Announced reports whether MarkAnnounced has run.
func (s *Store) Announced(ctx context.Context, id string) (bool, error) {
	return s.rdb.HExists(ctx, recordKey(id), "announced").Result()
}

// MaxListLimit bounds one page of List.
const MaxListLimit = limits.BatchListPage

// List returns up to limit batches, newest first, after the batch with id
// after ("" for the first page), and whether more follow.
func (s *Store) List(ctx context.Context, after string, limit int) ([]*Batch, bool, error) {
	if limit <= 0 || limit > MaxListLimit {
		limit = 20
	}
	start := int64(0)
	if after != "" {
		rank, err := s.rdb.ZRevRank(ctx, indexKey, after).Result()
		if errors.Is(err, redis.Nil) {
			return nil, false, fmt.Errorf("after=%s: %w", after, ErrNotFound)
		}
		if err != nil {
			return nil, false, err
		}
		start = rank + 1
	}
	ids, err := s.rdb.ZRevRange(ctx, indexKey, start, start+int64(limit)).Result()
	if err != nil {
		return nil, false, err
	}
	more := len(ids) > limit
	if more {
		ids = ids[:limit]
	}
	out := make([]*Batch, 0, len(ids))
	for _, id := range ids {
		b, err := s.Get(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue // indexed but gone (deleted by hand)
		}
		if err != nil {
			return nil, false, err
		}
		out = append(out, b)
	}
	return out, more, nil
}

// encodeRecord flattens a record into hash fields.
func encodeRecord(b *Batch) ([]any, error) {
	meta, err := json.Marshal(b.Metadata)
	if err != nil {
		return nil, err
	}
	pp, err := json.Marshal(b.PostProcess)
	if err != nil {
		return nil, err
	}
	errs, err := json.Marshal(b.Errors)
	if err != nil {
		return nil, err
	}
	f := []any{
		"id", b.ID, "model", b.Model, "input_kind", b.InputKind, "completion_window", b.CompletionWindow,
		"status", string(b.Status), "metadata", string(meta), "postprocess", string(pp), "errors", string(errs),
		"total", b.RequestCounts.Total, "completed", b.RequestCounts.Completed, "failed", b.RequestCounts.Failed,
		"chunks", b.Chunks, "chunk_size", b.ChunkSize, "batch_size", b.BatchSize, "skipped", b.Skipped,
		"created_at", b.CreatedAt, "expires_at", b.ExpiresAt, "device", b.Device,
		"endpoint", b.Endpoint, "input_file_id", b.InputFileID, "store", b.store,
	}
	return f, nil
}

// decodeRecord is encodeRecord's inverse, plus the fields scripts set.
func decodeRecord(m map[string]string) (*Batch, error) {
	b := &Batch{Object: "batch", Endpoint: generation.CompletionsURL}
	b.ID, b.Model, b.InputKind, b.CompletionWindow = m["id"], m["model"], m["input_kind"], m["completion_window"]
	b.Status = Status(m["status"])
	b.OutputKey, b.ErrorKey, b.Device = m["output_key"], m["error_key"], m["device"]
	if e := m["endpoint"]; e != "" { // records from before endpoints were kept: completions
		b.Endpoint = e
	}
	b.InputFileID, b.store = m["input_file_id"], m["store"]
	if b.OutputKey != "" {
		b.OutputFileID = files.ResultID(b.ID, FileOutput)
	}
	if b.ErrorKey != "" {
		b.ErrorFileID = files.ResultID(b.ID, FileErrors)
	}
	b.resultFiles = m["result_files"] != ""
	ints := map[string]*int{
		"total": &b.RequestCounts.Total, "completed": &b.RequestCounts.Completed, "failed": &b.RequestCounts.Failed,
		"chunks": &b.Chunks, "chunk_size": &b.ChunkSize, "batch_size": &b.BatchSize, "skipped": &b.Skipped,
	}
	for k, p := range ints {
		if v, ok := m[k]; ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				return nil, fmt.Errorf("field %s: %w", k, err)
			}
			*p = n
		}
	}
	times := map[string]*int64{
		"created_at": &b.CreatedAt, "in_progress_at": &b.InProgressAt, "expires_at": &b.ExpiresAt,
		"finalizing_at": &b.FinalizingAt, "completed_at": &b.CompletedAt, "failed_at": &b.FailedAt,
		"expired_at": &b.ExpiredAt, "cancelling_at": &b.CancellingAt, "cancelled_at": &b.CancelledAt,
	}
	for k, p := range times {
		if v, ok := m[k]; ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("field %s: %w", k, err)
			}
			*p = n
		}
	}
	jsonFields := map[string]any{"metadata": &b.Metadata, "postprocess": &b.PostProcess, "errors": &b.Errors}
	keys := make([]string, 0, len(jsonFields))
	for k := range jsonFields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if v, ok := m[k]; ok && v != "" && v != "null" {
			if err := json.Unmarshal([]byte(v), jsonFields[k]); err != nil {
				return nil, fmt.Errorf("field %s: %w", k, err)
			}
		}
	}
	return b, nil
}
