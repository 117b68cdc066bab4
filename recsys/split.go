package recsys

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// HoldoutSplit hides part of each user's items for offline evaluation. For
// every user with at least two distinct items, round(frac * n) of them (at
// least 1, at most n-1) are chosen with a seeded shuffle; all events on a
// chosen (user, item) pair go to the test set, the rest stay in train in
// their original order. Users are visited in first-seen order, so the same
// events, frac and seed always give the same split.
func HoldoutSplit(events []Event, frac float64, seed uint64) (train []Event, test map[string][]string, err error) {
	if !(frac > 0 && frac < 1) {
		return nil, nil, fmt.Errorf("recsys: holdout fraction %g out of range (0, 1)", frac)
	}
	type pair struct{ user, item string }
	var order []string
	items := map[string][]string{}
	known := map[pair]bool{}
	for _, ev := range events {
		p := pair{ev.User, ev.Item}
		if known[p] {
			continue
		}
		known[p] = true
		if _, ok := items[ev.User]; !ok {
			order = append(order, ev.User)
		}
		items[ev.User] = append(items[ev.User], ev.Item)
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x5851f42d4c957f2d))
	held := map[pair]bool{}
	test = map[string][]string{}
	for _, u := range order {
		its := items[u]
		n := len(its)
		if n < 2 {
			continue
		}
		h := min(max(int(math.Round(frac*float64(n))), 1), n-1)
		perm := rng.Perm(n)
		for _, k := range perm[:h] {
			held[pair{u, its[k]}] = true
			test[u] = append(test[u], its[k])
		}
	}
	train = make([]Event, 0, len(events))
	for _, ev := range events {
		if !held[pair{ev.User, ev.Item}] {
			train = append(train, ev)
		}
	}
	return train, test, nil
}
