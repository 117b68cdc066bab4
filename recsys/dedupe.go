package recsys

// recentIDs remembers the last cap event IDs: a ring in arrival order and a
// set for lookups. Memory is bounded by cap * (ID size + map overhead); an
// ID pushed out of the ring is forgotten, so a redelivery older than the
// last cap events is applied again. JetStream's Nats-Msg-Id window, in
// front of the consumer, covers the longer horizon.
type recentIDs struct {
	ring []string
	next int
	set  map[string]struct{}
}

func newRecentIDs(capacity int) *recentIDs {
	return &recentIDs{ring: make([]string, capacity), set: make(map[string]struct{}, capacity)}
}

func (r *recentIDs) has(id string) bool {
	_, ok := r.set[id]
	return ok
}

// add records id, forgetting the oldest one when full.
func (r *recentIDs) add(id string) {
	if old := r.ring[r.next]; old != "" {
		delete(r.set, old)
	}
	r.ring[r.next] = id
	r.set[id] = struct{}{}
	r.next = (r.next + 1) % len(r.ring)
}
