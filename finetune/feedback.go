package finetune

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	"github.com/tandem-ai/tandem/atomicfile"
	"github.com/tandem-ai/tandem/feedback"
	"github.com/tandem-ai/tandem/limits"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/registry"
)

// DefaultCollection gathers feedback that names no registered model.
const DefaultCollection = "default"

// Collection is the collection of feedback on a generation by model: the
// model's registry name (without any @version), or DefaultCollection.
func Collection(model string) string {
	name, _, _ := strings.Cut(model, "@")
	if registry.ValidateName(name) != nil {
		return DefaultCollection
	}
	return name
}

// FeedbackSample is one line of the feedback dataset (JSONL, the format
// finetune reads).
type FeedbackSample struct {
	Prompt     string `json:"prompt"`
	Completion string `json:"completion"`
}

// ErrIgnored is returned by Collect for feedback that makes no sample.
var ErrIgnored = errors.New("feedback: not an accept or an edit")

// FeedbackCollector gathers accepted and edited generations into a Redis
// hash keyed by generation id, so a redelivered event, or an accept
// followed by an edit of the same generation, leaves one sample (an edit
// replaces an accept; a repeated accept changes nothing).
type FeedbackCollector struct {
	rdb        redis.UniversalClient
	collection string
}

// NewFeedbackCollector returns a collector for one collection (the
// registry name of the model the feedback is about, see Collection); ""
// means DefaultCollection.
func NewFeedbackCollector(rdb redis.UniversalClient, collection string) (*FeedbackCollector, error) {
	if collection == "" {
		collection = DefaultCollection
	}
	if err := registry.ValidateName(collection); err != nil {
		return nil, fmt.Errorf("feedback collection: %w", err)
	}
	return &FeedbackCollector{rdb: rdb, collection: collection}, nil
}

func (c *FeedbackCollector) samplesKey() string {
	return pipeline.Key("finetune", "feedback", c.collection, "samples")
}
func (c *FeedbackCollector) trainedKey() string {
	return pipeline.Key("finetune", "feedback", c.collection, "trained")
}

// sample checks ev and turns it into a sample: ErrIgnored for an action
// other than accept or edit, an error naming the field for one that is
// missing or over its limit.
func sample(ev feedback.Event) (FeedbackSample, error) {
	if ev.Action != feedback.ActionAccept && ev.Action != feedback.ActionEdit {
		return FeedbackSample{}, ErrIgnored
	}
	if ev.GenerationID == "" || len(ev.GenerationID) > limits.FeedbackIDLen || strings.ContainsAny(ev.GenerationID, "\x00\n") {
		return FeedbackSample{}, fmt.Errorf("feedback: generation_id must be 1..%d bytes without NUL or newline", limits.FeedbackIDLen)
	}
	s := FeedbackSample{Prompt: ev.Prompt, Completion: ev.Completion}
	if ev.Action == feedback.ActionEdit {
		if strings.TrimSpace(ev.EditedText) == "" {
			return FeedbackSample{}, errors.New("feedback: edited_text: required for an edit")
		}
		s.Completion = ev.EditedText
	}
	if strings.TrimSpace(s.Completion) == "" {
		return FeedbackSample{}, errors.New("feedback: completion: required")
	}
	for name, v := range map[string]string{"prompt": s.Prompt, "completion": s.Completion} {
		if len(v) > feedback.MaxTextBytes || !utf8.ValidString(v) || strings.ContainsRune(v, 0) {
			return FeedbackSample{}, fmt.Errorf("feedback: %s must be valid UTF-8 text of at most %d bytes", name, feedback.MaxTextBytes)
		}
	}
	return s, nil
}

// Collect records ev. added is false for a duplicate; ErrIgnored marks an
// event that is neither an accept nor an edit (the caller acks it).
func (c *FeedbackCollector) Collect(ctx context.Context, ev feedback.Event) (added bool, err error) {
	s, err := sample(ev)
	if err != nil {
		return false, err
	}
	b, err := json.Marshal(s)
	if err != nil {
		return false, err
	}
	if ev.Action == feedback.ActionEdit {
		n, err := c.rdb.HSet(ctx, c.samplesKey(), ev.GenerationID, b).Result()
		if err != nil {
			return false, fmt.Errorf("feedback: %w", err)
		}
		return n == 1, nil
	}
	ok, err := c.rdb.HSetNX(ctx, c.samplesKey(), ev.GenerationID, b).Result()
	if err != nil {
		return false, fmt.Errorf("feedback: %w", err)
	}
	return ok, nil
}

// Count is the number of samples collected.
func (c *FeedbackCollector) Count(ctx context.Context) (int, error) {
	n, err := c.rdb.HLen(ctx, c.samplesKey()).Result()
	if err != nil {
		return 0, fmt.Errorf("feedback: %w", err)
	}
	return int(n), nil
}

// Trained is the sample count of the last fine-tune that used them.
func (c *FeedbackCollector) Trained(ctx context.Context) (int, error) {
	s, err := c.rdb.Get(ctx, c.trainedKey()).Result()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("feedback: %w", err)
	}
	return strconv.Atoi(s)
}

// MarkTrained records that a fine-tune used n samples.
func (c *FeedbackCollector) MarkTrained(ctx context.Context, n int) error {
	if err := c.rdb.Set(ctx, c.trainedKey(), n, 0).Err(); err != nil {
		return fmt.Errorf("feedback: %w", err)
	}
	return nil
}

// Export writes every sample as JSONL, ordered by generation id so that the
// same samples always give the same file (and digest), atomically.
func (c *FeedbackCollector) Export(ctx context.Context, path string) (n int, digest string, err error) {
	all, err := c.rdb.HGetAll(ctx, c.samplesKey()).Result()
	if err != nil {
		return 0, "", fmt.Errorf("feedback: %w", err)
	}
	ids := make([]string, 0, len(all))
	for id := range all {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var b strings.Builder
	for _, id := range ids {
		b.WriteString(all[id])
		b.WriteByte('\n')
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return 0, "", err
	}
	if err := atomicfile.WriteBytes(path, []byte(b.String())); err != nil {
		return 0, "", fmt.Errorf("feedback export: %w", err)
	}
	sum := sha256.Sum256([]byte(b.String()))
	return len(ids), hex.EncodeToString(sum[:]), nil
}
