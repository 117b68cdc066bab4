package adversarial

import (
	"fmt"
	"testing"
)

// finding is one case of the suite: a finding of the adversarial run
// (numbered as in issue 22 and docs/SECURITY.md) and what must hold now.
type finding struct {
	n    int
	name string
	run  func(t *testing.T, s *stack)
	// disrupts marks a case that pauses or restarts a service; those run
	// after every other case, one at a time.
	disrupts bool
}

// findings is the suite, in the order.
var findings = []finding{
	{1, "rows survive a Redis stall mid-batch", stallMidBatch, true},
	{2, "job paths cannot reach the data dir", jobPathsIntoDataDir, false},
	{3, "feedback only for generations that exist, by their user", forgedFeedback, false},
	{4, "internal kinds are refused by the public API", internalKinds, false},
	{5, "the bus needs a login and keeps each role to its subjects", busRoles, false},
	{6, "a template cannot blow up the producer's memory", templateBomb, false},
	{7, "feedback values are checked where they enter", feedbackValues, false},
	{8, "POST /v1/jobs validates every field", jobFields, false},
	{10, "slow bodies are cut off", slowBodies, false},
	{10, "a FIFO input is refused before it is opened", fifoInput, false},
	{10, "invalid UTF-8 in custom_id is refused with the line", utf8IDs, false},
	{10, "too-large bodies get 413 everywhere", tooLarge, false},
	{10, "errors name no server paths; every missing model answers alike", serverPaths, false},
	{9, "services see Redis again after it restarts empty", redisRestart, true},
}

func TestAdversarial(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the three binaries and a redis-server")
	}
	s := startStack(t)
	for _, disrupting := range []bool{false, true} {
		for _, f := range findings {
			if f.disrupts != disrupting {
				continue
			}
			t.Run(fmt.Sprintf("%d %s", f.n, f.name), func(t *testing.T) { f.run(t, s) })
		}
	}
}
