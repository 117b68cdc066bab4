package recsys

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
)

// RecLine is one line of the recommendations file that `worker exec
// recs-rebuild` writes: a user and its items, best first.
type RecLine struct {
	User  string   `json:"user"`
	Items []Scored `json:"items"`
}

// WriteRecommendations writes one JSON line per user, in user index order:
// {"user":...,"items":[{"item":...,"score":...},...]}, items ordered by score
// descending (ties by first appearance of the item), seen items excluded.
// A user with nothing to recommend gets "items":[]. It returns the number
// of lines written.
func WriteRecommendations(w io.Writer, m *Model, opts RecOptions) (int, error) {
	all, err := m.All(opts)
	if err != nil {
		return 0, err
	}
	bw := bufio.NewWriterSize(w, 256<<10)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	n := 0
	for user, items := range all {
		if items == nil {
			items = []Scored{}
		}
		if err := enc.Encode(RecLine{User: user, Items: items}); err != nil {
			return n, fmt.Errorf("recsys: writing recommendations of user %d: %w", n+1, err)
		}
		n++
	}
	if err := bw.Flush(); err != nil {
		return n, fmt.Errorf("recsys: writing recommendations: %w", err)
	}
	return n, nil
}
