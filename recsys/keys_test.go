package recsys_test

import (
	"testing"

	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/recsys"
)

// recsys repeats pipeline's prefix rather than importing the job plumbing;
// this keeps the two from drifting apart.
func TestKeyPrefixMatchesPipeline(t *testing.T) {
	if recsys.KeyPrefix != pipeline.RecsKeyPrefix {
		t.Fatalf("recsys.KeyPrefix = %q, pipeline.RecsKeyPrefix = %q", recsys.KeyPrefix, pipeline.RecsKeyPrefix)
	}
}
