package recsys

import (
	"math"
	"reflect"
	"testing"
)

// TestMetricsByHand checks every metric on a case worked out on paper.
//
// User a: held out {x, y}; list [x, p, y] at k=3 -> hits at ranks 1 and 3.
//
//	P = 2/3, R = 1, DCG = 1 + 1/log2(4) = 1.5, IDCG = 1 + 1/log2(3),
//	AP = (1/1 + 2/3) / min(3, 2) = 5/6.
//
// User b: held out {z}; list [q, q, z, r] -> duplicates count once, so the
// top 3 is [q, z, r]: hit at rank 2.
//
//	P = 1/3, R = 1, DCG = 1/log2(3), IDCG = 1, AP = (1/2) / 1.
//
// User c: held out {w}; no list: all zero. Coverage: {x, p, y, q, z, r} of 10.
func TestMetricsByHand(t *testing.T) {
	t.Parallel()
	test := map[string][]string{"a": {"x", "y"}, "b": {"z"}, "c": {"w"}, "d": nil}
	lists := map[string][]string{"a": {"x", "p", "y", "z"}, "b": {"q", "q", "z", "r"}}
	got, err := Evaluate(3, 10, test, func(u string) []string { return lists[u] })
	if err != nil {
		t.Fatal(err)
	}
	l3 := math.Log2(3)
	want := Metrics{
		K: 3, Users: 3,
		Precision: (2.0/3 + 1.0/3 + 0) / 3,
		Recall:    (1 + 1 + 0) / 3.0,
		NDCG:      (1.5/(1+1/l3) + (1/l3)/1 + 0) / 3,
		MAP:       (5.0/6 + 0.5 + 0) / 3,
		Coverage:  6.0 / 10,
	}
	g, w := reflect.ValueOf(got), reflect.ValueOf(want)
	for i := range g.NumField() {
		a, b := g.Field(i), w.Field(i)
		if a.CanFloat() && math.Abs(a.Float()-b.Float()) > 1e-12 || a.CanInt() && a.Int() != b.Int() {
			t.Errorf("%s = %v, want %v", g.Type().Field(i).Name, a, b)
		}
	}
	if _, err := Evaluate(0, 10, test, nil); err == nil {
		t.Error("k = 0 accepted")
	}
}

func TestHoldoutSplit(t *testing.T) {
	t.Parallel()
	evs := synth(t, smallSynth(2))
	train, test, err := HoldoutSplit(evs, 0.25, 9)
	if err != nil {
		t.Fatal(err)
	}
	train2, test2, _ := HoldoutSplit(evs, 0.25, 9)
	if !reflect.DeepEqual(test, test2) || !reflect.DeepEqual(train, train2) {
		t.Fatal("the same seed gave different splits")
	}
	_, test3, _ := HoldoutSplit(evs, 0.25, 10)
	if reflect.DeepEqual(test, test3) {
		t.Fatal("different seeds gave the same split")
	}
	full := newTestStore(t, StoreConfig{}, evs)
	tr := newTestStore(t, StoreConfig{}, train)
	held := 0
	for u, items := range test {
		for _, it := range items {
			if _, ok := tr.Value(u, it); ok {
				t.Fatalf("held-out pair (%s, %s) still in train", u, it)
			}
			if _, ok := full.Value(u, it); !ok {
				t.Fatalf("held-out pair (%s, %s) not in the data", u, it)
			}
		}
		held += len(items)
		if _, ok := tr.users.lookup(u); !ok {
			t.Fatalf("user %s lost every item to the test set", u)
		}
	}
	if int64(held)+tr.Cells() != full.Cells() {
		t.Fatalf("train %d + test %d pairs != %d", tr.Cells(), held, full.Cells())
	}
	if _, _, err := HoldoutSplit(evs, 1, 1); err == nil {
		t.Fatal("fraction 1 accepted")
	}
}
