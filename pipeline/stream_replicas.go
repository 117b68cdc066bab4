package pipeline

import (
	"fmt"
	"os"
	"strconv"
)

// StreamReplicasEnv sets how many copies JetStream keeps of each stream that
// EnsureStreams creates: 1 on one server (the default), 3 on the production
// NATS cluster. Every process that ensures streams reads it, so they agree
// and no replica "updates" the streams back to another count.
const StreamReplicasEnv = "TANDEM_NATS_STREAM_REPLICAS"

// StreamReplicas returns the replica count from StreamReplicasEnv, 1 when
// unset. A value outside 1..5 is an error naming the variable.
func StreamReplicas() (int, error) {
	v, ok := os.LookupEnv(StreamReplicasEnv)
	if !ok || v == "" {
		return 1, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 5 {
		return 0, fmt.Errorf("%s: %q is not a whole number in 1..5", StreamReplicasEnv, v)
	}
	return n, nil
}
