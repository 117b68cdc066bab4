package recsys

import (
	"fmt"
	"math"
	"slices"
)

// Metrics are ranking metrics at K averaged over the evaluated users, plus
// catalogue coverage.
type Metrics struct {
	K int `json:"k"`
	// Users is the number of users with held-out items that were evaluated.
	Users int `json:"users"`
	// Precision@K: hits in the top K / K.
	Precision float64 `json:"precision"`
	// Recall@K: hits in the top K / held-out items.
	Recall float64 `json:"recall"`
	// NDCG@K with binary relevance: sum over hits at rank i (1-based) of
	// 1/log2(i+1), over the same sum for a perfect list of min(K, held-out)
	// hits.
	NDCG float64 `json:"ndcg"`
	// MAP@K: sum over hits at rank i of (hits within the first i)/i, divided
	// by min(K, held-out).
	MAP float64 `json:"map"`
	// Coverage: distinct items in all top-K lists / catalogue size.
	Coverage float64 `json:"coverage"`
}

func (m Metrics) String() string {
	return fmt.Sprintf("users=%d P@%d=%.4f R@%d=%.4f nDCG@%d=%.4f MAP@%d=%.4f coverage=%.4f",
		m.Users, m.K, m.Precision, m.K, m.Recall, m.K, m.NDCG, m.K, m.MAP, m.Coverage)
}

// Evaluate scores recommend's lists against the held-out items of test.
// Only the first k recommendations count, and an item recommended twice
// counts once. catalogue is the number of items coverage is relative to.
func Evaluate(k, catalogue int, test map[string][]string, recommend func(user string) []string) (Metrics, error) {
	if k < 1 {
		return Metrics{}, fmt.Errorf("recsys: evaluate: k %d < 1", k)
	}
	if catalogue < 1 {
		return Metrics{}, fmt.Errorf("recsys: evaluate: catalogue size %d < 1", catalogue)
	}
	users := make([]string, 0, len(test))
	for u, rel := range test {
		if len(rel) > 0 {
			users = append(users, u)
		}
	}
	slices.Sort(users) // fixed order: sums are reproducible to the last bit
	m := Metrics{K: k}
	covered := map[string]bool{}
	for _, u := range users {
		rel := map[string]bool{}
		for _, it := range test[u] {
			rel[it] = true
		}
		recs := recommend(u)
		seen := map[string]bool{}
		var hits, dcg, ap float64
		rank := 0
		for _, it := range recs {
			if rank == k {
				break
			}
			if seen[it] {
				continue
			}
			seen[it] = true
			rank++
			covered[it] = true
			if rel[it] {
				hits++
				dcg += 1 / math.Log2(float64(rank)+1)
				ap += hits / float64(rank)
			}
		}
		ideal := min(k, len(rel))
		var idcg float64
		for i := 1; i <= ideal; i++ {
			idcg += 1 / math.Log2(float64(i)+1)
		}
		m.Precision += hits / float64(k)
		m.Recall += hits / float64(len(rel))
		m.NDCG += dcg / idcg
		m.MAP += ap / float64(ideal)
	}
	m.Users = len(users)
	if m.Users > 0 {
		n := float64(m.Users)
		m.Precision /= n
		m.Recall /= n
		m.NDCG /= n
		m.MAP /= n
	}
	m.Coverage = float64(len(covered)) / float64(catalogue)
	return m, nil
}
