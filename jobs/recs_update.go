package jobs

import (
	"errors"
	"fmt"
	"time"

	"github.com/tandem-ai/tandem/pipeline"
)

// KindRecsUserUpdate is the stable kind string of RecsUserUpdateArgs.
const KindRecsUserUpdate = "recs:user-update"

// MaxRecsUserBytes bounds a user id in an update task, as the serving store
// bounds it.
const MaxRecsUserBytes = 256

// RecsUserUpdateArgs asks for one user's served list to be recomputed from
// the live model, with the lists of the users whose neighbours that user's
// events moved. The scheduler's feedback consumer enqueues one per user per
// short window (task id recs-user:<window>:<user>), which reads the log
// once the window has closed; its handler runs in the scheduler (queue
// pipeline.QueueRecsLive), where the live model is.
type RecsUserUpdateArgs struct {
	User string `json:"user"`
	// NotBefore is the end of the window, in Unix milliseconds: the handler
	// reads the log no earlier, so that every event of the window is in.
	// asynq schedules in whole seconds, too coarse for a window of a few
	// hundred milliseconds, so the task is enqueued at once and the handler
	// waits out the rest of the window.
	NotBefore int64 `json:"not_before,omitempty"`
}

// Kind implements pipeline.JobArgs.
func (RecsUserUpdateArgs) Kind() string { return KindRecsUserUpdate }

// RecsUserUpdateTimeout bounds one update task: waiting out its window,
// waiting for the live model to apply the log, and rewriting the lists.
// The scheduler caps --recs-window so that the waits fit in it.
const RecsUserUpdateTimeout = time.Minute

// KindOptions implements pipeline.KindOptioner: a short timeout and a few
// retries; a lost update is repaired by the user's next event or the next
// rebuild.
func (RecsUserUpdateArgs) KindOptions() pipeline.KindOptions {
	return pipeline.KindOptions{Queue: pipeline.QueueRecsLive, MaxRetry: 5, Timeout: RecsUserUpdateTimeout}
}

// Validate implements pipeline.Validator.
func (a RecsUserUpdateArgs) Validate() error {
	if a.User == "" {
		return errors.New("user: required")
	}
	if len(a.User) > MaxRecsUserBytes {
		return fmt.Errorf("user: %d bytes, over the limit of %d", len(a.User), MaxRecsUserBytes)
	}
	if a.NotBefore < 0 {
		return fmt.Errorf("not_before: %d is negative", a.NotBefore)
	}
	return nil
}
