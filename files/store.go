// Package files keeps the files of the OpenAI Files API: uploaded batch
// inputs and the output and error files of batches. The bytes are in the
// artifact store (package artifact), under "files/<id>" for uploads and
// where the batch wrote them for results; the file objects are Redis hashes
// under KeyPrefix, indexed by creation time for listing.
package files

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tandem-ai/tandem/artifact"
	"github.com/tandem-ai/tandem/pipeline"
)

// Purposes of a file. Uploads take PurposeBatch only; the others are the
// results of batches.
const (
	PurposeBatch       = "batch"
	PurposeBatchOutput = "batch_output"
)

// KeyPrefix starts the Redis keys of files.
const KeyPrefix = pipeline.RedisKeyPrefix + "file:"

// IDPrefix starts every file id.
const IDPrefix = "file-"

// ErrNotFound is wrapped by errors for ids that name no file.
var ErrNotFound = errors.New("files: not found")

// File is a file object, in the OpenAI shape.
type File struct {
	ID        string `json:"id"`
	Object    string `json:"object"`
	Bytes     int64  `json:"bytes"`
	CreatedAt int64  `json:"created_at"`
	ExpiresAt *int64 `json:"expires_at"`
	Filename  string `json:"filename"`
	Purpose   string `json:"purpose"`
	// Status is always "processed": an upload is checked before it is kept.
	Status string `json:"status"`

	key string // where the bytes are in the artifact store
}

// Store keeps files.
type Store struct {
	rdb  redis.UniversalClient
	arts artifact.Store
	now  func() time.Time
}

// NewStore returns a store on rdb and arts (neither is closed by it).
func NewStore(rdb redis.UniversalClient, arts artifact.Store) *Store {
	return &Store{rdb: rdb, arts: arts, now: time.Now}
}

func recordKey(id string) string { return KeyPrefix + id }

// indexKey orders the files of one purpose, or of all ("").
func indexKey(purpose string) string {
	if purpose == "" {
		return KeyPrefix + "index"
	}
	return KeyPrefix + "index:" + purpose
}

// validID accepts what NewID and ResultID make, so an id from a client
// never reaches a key unchecked.
func validID(id string) bool {
	hexPart, ok := strings.CutPrefix(id, IDPrefix)
	if !ok || len(hexPart) != 24 {
		return false
	}
	_, err := hex.DecodeString(hexPart)
	return err == nil
}

func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read does not fail on supported platforms
	return IDPrefix + hex.EncodeToString(b[:])
}

// ResultID is the id of a batch's result file which ("output" or
// "errors"): derived, so the batch object names it before anyone asks for
// the file.
func ResultID(batchID, which string) string {
	h := sha256.Sum256([]byte(batchID + "\x00" + which))
	return IDPrefix + hex.EncodeToString(h[:12])
}

// Create stores r's bytes (size of them, already checked) as a new file.
func (s *Store) Create(ctx context.Context, r io.Reader, filename, purpose string, size int64) (*File, error) {
	f := &File{ID: newID(), Object: "file", Bytes: size, CreatedAt: s.now().Unix(), Filename: filename, Purpose: purpose, Status: "processed"}
	f.key = "files/" + f.ID
	if err := s.arts.Put(ctx, f.key, r); err != nil {
		return nil, fmt.Errorf("file %s: %w", f.ID, err)
	}
	if err := s.index(ctx, f); err != nil {
		_ = s.arts.Delete(context.WithoutCancel(ctx), f.key)
		return nil, err
	}
	return f, nil
}

// index writes f's record and adds it to the listings. A file already
// listed keeps its place (ZADD NX), so indexing a result file again, as two
// racing registrations may, does not move it.
func (s *Store) index(ctx context.Context, f *File) error {
	score := float64(s.now().UnixNano())
	pipe := s.rdb.TxPipeline()
	pipe.HSet(ctx, recordKey(f.ID), "id", f.ID, "bytes", f.Bytes, "created_at", f.CreatedAt,
		"filename", f.Filename, "purpose", f.Purpose, "key", f.key)
	pipe.ZAddNX(ctx, indexKey(""), redis.Z{Score: score, Member: f.ID})
	pipe.ZAddNX(ctx, indexKey(f.Purpose), redis.Z{Score: score, Member: f.ID})
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("file %s: %w", f.ID, err)
	}
	return nil
}

// RegisterResult makes the artifact under key, a result of batch batchID,
// the file ResultID(batchID, which), once; nothing happens when the file is
// known already or the artifact is gone (the file was deleted). Batch
// finalisation calls it before the batch ends (batch.Runner.Finalize).
func (s *Store) RegisterResult(ctx context.Context, batchID, which, key string) error {
	id := ResultID(batchID, which)
	if n, err := s.rdb.Exists(ctx, recordKey(id)).Result(); err != nil || n == 1 {
		return err
	}
	info, err := s.arts.Stat(ctx, key)
	if errors.Is(err, artifact.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	f := &File{ID: id, Bytes: info.Size, CreatedAt: info.ModTime.Unix(), Filename: batchID + "_" + which + ".jsonl",
		Purpose: PurposeBatchOutput, key: key}
	return s.index(ctx, f)
}

// Get reads a file object.
func (s *Store) Get(ctx context.Context, id string) (*File, error) {
	if !validID(id) {
		return nil, fmt.Errorf("file %q: %w", id, ErrNotFound)
	}
	m, err := s.rdb.HGetAll(ctx, recordKey(id)).Result()
	if err != nil {
		return nil, fmt.Errorf("file %s: %w", id, err)
	}
	if len(m) == 0 {
		return nil, fmt.Errorf("file %s: %w", id, ErrNotFound)
	}
	f := &File{ID: m["id"], Object: "file", Filename: m["filename"], Purpose: m["purpose"], Status: "processed", key: m["key"]}
	f.Bytes, _ = strconv.ParseInt(m["bytes"], 10, 64)
	f.CreatedAt, _ = strconv.ParseInt(m["created_at"], 10, 64)
	return f, nil
}

// Open opens a file's bytes; the caller closes them.
func (s *Store) Open(ctx context.Context, id string) (io.ReadCloser, *File, error) {
	f, err := s.Get(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	rc, err := s.arts.Get(ctx, f.key)
	if errors.Is(err, artifact.ErrNotFound) {
		return nil, nil, fmt.Errorf("file %s: its content is gone: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, nil, err
	}
	return rc, f, nil
}

// Delete removes a file, its bytes first.
func (s *Store) Delete(ctx context.Context, id string) error {
	f, err := s.Get(ctx, id)
	if err != nil {
		return err
	}
	if err := s.arts.Delete(ctx, f.key); err != nil {
		return fmt.Errorf("file %s: %w", id, err)
	}
	pipe := s.rdb.TxPipeline()
	pipe.Del(ctx, recordKey(id))
	pipe.ZRem(ctx, indexKey(""), id)
	pipe.ZRem(ctx, indexKey(f.Purpose), id)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("file %s: %w", id, err)
	}
	return nil
}

// ListOptions select a page of files, as GET /v1/files takes them.
type ListOptions struct {
	Purpose string // "": every purpose
	After   string // a file id: the page starts after it
	Limit   int
	Asc     bool // oldest first; newest first otherwise
}

// List returns a page of files and whether more follow.
func (s *Store) List(ctx context.Context, o ListOptions) ([]*File, bool, error) {
	key := indexKey(o.Purpose)
	start := int64(0)
	if o.After != "" {
		rank := s.rdb.ZRevRank
		if o.Asc {
			rank = s.rdb.ZRank
		}
		n, err := rank(ctx, key, o.After).Result()
		if errors.Is(err, redis.Nil) {
			return nil, false, fmt.Errorf("after: file %q: %w", o.After, ErrNotFound)
		}
		if err != nil {
			return nil, false, err
		}
		start = n + 1
	}
	var ids []string
	var err error
	if o.Asc {
		ids, err = s.rdb.ZRange(ctx, key, start, start+int64(o.Limit)).Result()
	} else {
		ids, err = s.rdb.ZRevRange(ctx, key, start, start+int64(o.Limit)).Result()
	}
	if err != nil {
		return nil, false, err
	}
	more := len(ids) > o.Limit
	if more {
		ids = ids[:o.Limit]
	}
	out := make([]*File, 0, len(ids))
	for _, id := range ids {
		f, err := s.Get(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, false, err
		}
		out = append(out, f)
	}
	return out, more, nil
}
