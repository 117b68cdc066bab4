package pipeline

import (
	"fmt"
	"maps"
	"time"
)

// SplitQueue carves queue out of c into a lane of its own: fast serves only
// queue, polling it every poll with concurrency jobs at once, and rest is c
// without it (rest.Queues is empty when queue was c's only queue). Both keep
// c's other settings. fast promotes scheduled and retrying jobs at c's
// PollInterval, not every poll: its short interval is for picking up work.
//
// Why a lane: asynq's processor sleeps PollInterval/2 plus up to
// PollInterval after finding its queues empty, and nothing wakes it early,
// so with the 1s default a job a person waits for starts up to 1.5s late.
// A server of its own polls the interactive queue every few milliseconds at
// the price of one Redis script call per poll while idle (measured in
// docs/PERFORMANCE.md), while bulk queues keep their cheap 1s poll.
func (c Config) SplitQueue(queue string, poll time.Duration, concurrency int) (fast, rest Config, err error) {
	if _, ok := c.Queues[queue]; !ok {
		return fast, rest, fmt.Errorf("split queue %q: not among the served queues %v", queue, c.Queues)
	}
	if poll < MinPollInterval || poll > MaxPollInterval {
		return fast, rest, fmt.Errorf("split queue %q: poll interval %v is outside [%v, %v]", queue, poll, MinPollInterval, MaxPollInterval)
	}
	if concurrency < 1 || concurrency > MaxConcurrency {
		return fast, rest, fmt.Errorf("split queue %q: concurrency %d is outside 1..%d", queue, concurrency, MaxConcurrency)
	}
	fast, rest = c, c
	fast.Queues = map[string]int{queue: 1}
	fast.PollInterval, fast.DelayedPollInterval, fast.Concurrency = poll, c.delayedPollInterval(), concurrency
	rest.Queues = maps.Clone(c.Queues)
	delete(rest.Queues, queue)
	return fast, rest, nil
}

// delayedPollInterval is DelayedPollInterval, or PollInterval when unset.
func (c Config) delayedPollInterval() time.Duration {
	if c.DelayedPollInterval > 0 {
		return c.DelayedPollInterval
	}
	return c.PollInterval
}
