package generation

import "testing"

// A line's ids repeat for the same batch (a chunk run again writes the same
// ones) and differ between batches, lines and custom_ids.
func TestLineIDIsStablePerBatchAndUniqueAcross(t *testing.T) {
	a := LineID(LineIDPrefix, "batch_1", 3, "x")
	if a != LineID(LineIDPrefix, "batch_1", 3, "x") {
		t.Fatal("the same line of the same batch got two ids")
	}
	for _, other := range []string{
		LineID(LineIDPrefix, "batch_2", 3, "x"),
		LineID(LineIDPrefix, "batch_1", 4, "x"),
		LineID(LineIDPrefix, "batch_1", 3, "y"),
	} {
		if other == a {
			t.Fatalf("id %s shared", a)
		}
	}
}
