package model

import "testing"

// TestPrefillGroupInvariantAnswersFromTheKernels checks that the probe
// runs for a CPU model and that its answer is cached per process.
func TestPrefillGroupInvariantAnswersFromTheKernels(t *testing.T) {
	m, err := New(Config{NLayer: 1, NHead: 2, NEmbd: 64, NPositions: 32, VocabSize: 100, LayerNormEpsilon: 1e-5}, 1)
	if err != nil {
		t.Fatal(err)
	}
	first := m.PrefillGroupInvariant()
	if m.PrefillGroupInvariant() != first {
		t.Fatal("two answers for one shape")
	}
	if got := probeRowInvariance(m.Kernels, 64); got != first {
		t.Fatalf("cached %v, probe now %v", first, got)
	}
	t.Logf("products of more than 16 rows are row-invariant here: %v", first)
}
