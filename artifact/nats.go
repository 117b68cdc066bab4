package artifact

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// DefaultBucket is the Object Store bucket NATS uses unless told otherwise.
const DefaultBucket = "tandem-artifacts"

// NATS is a Store in a JetStream Object Store bucket. Object Store writes
// the object's chunks first and its metadata last, so a reader sees the
// previous version until the new one is complete: Put is atomic.
type NATS struct {
	bucket string
	obs    jetstream.ObjectStore
}

// NewNATS opens bucket, creating it (file storage, one replica) when it
// does not exist. An existing bucket is used as configured, so an operator
// may give it replicas or limits that a worker's start-up never overwrites.
func NewNATS(ctx context.Context, js jetstream.JetStream, bucket string) (*NATS, error) {
	if js == nil {
		return nil, errors.New("artifact: NATS store needs a JetStream connection (set TANDEM_NATS_URL)")
	}
	if bucket == "" {
		bucket = DefaultBucket
	}
	obs, err := js.ObjectStore(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		obs, err = js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{
			Bucket:      bucket,
			Description: "Tandem artifacts: batch inputs, chunk outputs, merged results",
			Storage:     jetstream.FileStorage,
			Replicas:    1,
		})
		if errors.Is(err, jetstream.ErrBucketExists) || errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			obs, err = js.ObjectStore(ctx, bucket) // another worker created it first
		}
	}
	if err != nil {
		return nil, fmt.Errorf("artifact: object store %s: %w", bucket, err)
	}
	return &NATS{bucket: bucket, obs: obs}, nil
}

// Bucket is the bucket's name.
func (n *NATS) Bucket() string { return n.bucket }

// Put stores r under key.
func (n *NATS) Put(ctx context.Context, key string, r io.Reader) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	if _, err := n.obs.Put(ctx, jetstream.ObjectMeta{Name: key}, r); err != nil {
		return fmt.Errorf("artifact: put %s: %w", n.Location(key), err)
	}
	return nil
}

// Get opens key. The object's digest is checked when the reader reaches
// its end; a mismatch comes back as a read error.
func (n *NATS) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	res, err := n.obs.Get(ctx, key)
	if err != nil {
		return nil, n.wrap("get", key, err)
	}
	return res, nil
}

// Stat describes key.
func (n *NATS) Stat(ctx context.Context, key string) (Info, error) {
	if err := ValidateKey(key); err != nil {
		return Info{}, err
	}
	info, err := n.obs.GetInfo(ctx, key)
	if err != nil {
		return Info{}, n.wrap("stat", key, err)
	}
	return Info{Key: key, Size: int64(info.Size), ModTime: info.ModTime}, nil
}

// Delete removes key.
func (n *NATS) Delete(ctx context.Context, key string) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	if err := n.obs.Delete(ctx, key); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("artifact: delete %s: %w", n.Location(key), err)
	}
	return nil
}

// List returns the bucket's keys under prefix. Object Store lists a whole
// bucket at once, so this is for tools and tests, not hot paths.
func (n *NATS) List(ctx context.Context, prefix string) ([]string, error) {
	if err := validatePrefix(prefix); err != nil {
		return nil, err
	}
	infos, err := n.obs.List(ctx)
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("artifact: list %s: %w", prefix, err)
	}
	var keys []string
	for _, i := range infos {
		if !i.Deleted && strings.HasPrefix(i.Name, prefix) {
			keys = append(keys, i.Name)
		}
	}
	sort.Strings(keys)
	return keys, nil
}

// Location is nats-object://BUCKET/KEY.
func (n *NATS) Location(key string) string { return "nats-object://" + n.bucket + "/" + key }

// ID is "nats:BUCKET@" and the creation time of the bucket's stream, so
// that two NATS servers each holding a bucket of that name differ.
func (n *NATS) ID(ctx context.Context) (string, error) {
	st, err := n.obs.Status(ctx)
	if err != nil {
		return "", fmt.Errorf("artifact: store id: %w", err)
	}
	id := "nats:" + n.bucket
	if bs, ok := st.(*jetstream.ObjectBucketStatus); ok && bs.StreamInfo() != nil {
		id += "@" + strconv.FormatInt(bs.StreamInfo().Created.UnixNano(), 10)
	}
	return id, nil
}

// Close does nothing: the connection belongs to the caller.
func (n *NATS) Close() error { return nil }

func (n *NATS) wrap(op, key string, err error) error {
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("artifact: %s %s: %w", op, n.Location(key), ErrNotFound)
	}
	return fmt.Errorf("artifact: %s %s: %w", op, n.Location(key), err)
}
