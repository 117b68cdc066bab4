package pipeline

import (
	"fmt"
	"strings"

	"github.com/tandem-ai/tandem/limits"
)

// Names Tandem writes into Redis and asynq live here, once, so that a reader
// can see every prefix the product owns and two packages can never pick the
// same one by accident.

// Queue names. Weights are set by Config.Queues; these are the names the
// default configuration and the job kinds agree on.
const (
	// QueueInteractive carries jobs a person is waiting for (a prompt, a rating).
	QueueInteractive = "interactive"
	// QueueDefault carries bulk generation chunks and similarity updates.
	QueueDefault = "default"
	// QueueFinetune carries long training jobs that must not starve the others.
	QueueFinetune = "finetune"
	// QueueRecsLive carries the recommender's coalesced per-user updates. Only
	// schedulers take it: they hold the live model those updates read.
	QueueRecsLive = "recs-live"
	// QueueGPU carries generation and fine-tuning jobs meant for GPU
	// workers (worker --device cuda:N). CPU workers never listen on it;
	// GPU workers listen on it first and on the others at lower weights.
	QueueGPU = "gpu"
)

// GPUWorkerQueues are the queues of a GPU worker whose queues were not set
// explicitly: its own queue far ahead, then the CPU queues, so an idle GPU
// also takes CPU work.
func GPUWorkerQueues() map[string]int {
	return map[string]int{QueueGPU: 12, QueueInteractive: 3, QueueDefault: 2, QueueFinetune: 1}
}

// QueueForDevice routes a job to the workers of a device: QueueGPU for
// "cuda" (or "cuda:N": any GPU worker may take it), queue for "cpu" or ""
// (a kind's own queue when queue is ""). A CUDA device with a queue other
// than QueueGPU is a contradiction and an error.
func QueueForDevice(device, queue string) (string, error) {
	switch {
	case device == "" || device == "cpu":
		if queue == QueueGPU {
			return "", fmt.Errorf("device %q: queue %q is the GPU workers'", device, queue)
		}
		return queue, nil
	case device == "cuda" || strings.HasPrefix(device, "cuda:") && len(device) > len("cuda:") && strings.Trim(device[len("cuda:"):], "0123456789") == "":
		if queue != "" && queue != QueueGPU {
			return "", fmt.Errorf("device %q goes to queue %q, not %q", device, QueueGPU, queue)
		}
		return QueueGPU, nil
	}
	return "", fmt.Errorf("device %q: want cpu, cuda or cuda:N", device)
}

// Task kind prefixes. A kind is "<domain>:<action>", for example
// "generate:chunk"; the domain groups kinds on dashboards and in asynqmon.
// Kinds themselves are declared in jobs/, one file each, and never change.
const (
	KindPrefixGenerate = "generate:"
	KindPrefixRecs     = "recs:"
	KindPrefixFinetune = "finetune:"
	KindPrefixFeedback = "feedback:"
)

// Redis key prefixes. asynq keeps its own keys under "asynq:"; everything
// Tandem stores beside them starts with RedisKeyPrefix.
const (
	RedisKeyPrefix = "tandem:"
	// BatchKeyPrefix holds batch records and their counters.
	BatchKeyPrefix = RedisKeyPrefix + "batch:"
	// RecsKeyPrefix holds the interaction store and similarity state.
	RecsKeyPrefix = RedisKeyPrefix + "recs:"
	// ModelKeyPrefix holds model version pointers.
	ModelKeyPrefix = RedisKeyPrefix + "model:"
)

// asynqQueuesKey is asynq's set of queue names (asynq v0.26 keeps it
// unexported in internal/base as AllQueues): its inspector knows only the
// queues named there. RegisterQueues adds to it; a test pins the name.
const asynqQueuesKey = "asynq:queues"

// PeriodicTaskIDSeparator joins a periodic task's ID: "<entry name>:<tick unix
// seconds>" (see Periodic). Entry names cannot contain it, so IDs of two
// entries never collide.
const PeriodicTaskIDSeparator = ":"

// Key joins parts under RedisKeyPrefix with ":", e.g. Key("batch", id, "count").
func Key(parts ...string) string {
	return RedisKeyPrefix + strings.Join(parts, ":")
}

// MaxKindLen bounds a kind string; kinds are metric labels and Redis fields.
const MaxKindLen = limits.KindLen

// ValidateKind reports whether kind is a well-formed task kind: non-empty, at
// most MaxKindLen bytes, and made of lower-case letters, digits and ":._-".
// The narrow alphabet keeps kinds safe as metric labels, log fields and
// TaskID parts.
func ValidateKind(kind string) error {
	if kind == "" {
		return fmt.Errorf("kind is empty")
	}
	if len(kind) > MaxKindLen {
		return fmt.Errorf("kind %.32q... is %d bytes, over the limit of %d", kind, len(kind), MaxKindLen)
	}
	for i := 0; i < len(kind); i++ {
		c := kind[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == ':', c == '.', c == '_', c == '-':
		default:
			return fmt.Errorf("kind %q has character %q at %d; use a-z 0-9 : . _ -", kind, c, i)
		}
	}
	return nil
}

// MaxQueueNameLen bounds a queue name.
const MaxQueueNameLen = limits.QueueNameLen

// ValidateQueueName reports whether name is usable as a queue name: non-empty,
// at most MaxQueueNameLen bytes, letters, digits and "._-" only. asynq accepts
// any non-blank string; the narrower rule keeps names safe in Redis keys
// ("asynq:{name}:...") and metric labels.
func ValidateQueueName(name string) error {
	if name == "" {
		return fmt.Errorf("queue name is empty")
	}
	if len(name) > MaxQueueNameLen {
		return fmt.Errorf("queue name %.32q... is %d bytes, over the limit of %d", name, len(name), MaxQueueNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return fmt.Errorf("queue name %q has character %q at %d; use letters, digits . _ -", name, c, i)
		}
	}
	return nil
}
