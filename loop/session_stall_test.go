package loop

import (
	"context"
	"testing"
	"time"

	"github.com/tandem-ai/tandem/internal/redistest"
)

// A session created while Redis stalls past the client's read timeout:
// go-redis sends SETNX again, the resumed Redis runs both, and the repeat
// finds the session the first one wrote. Create must report the session
// it made, not ErrSessionExists.
func TestSessionCreateSurvivesRedisStall(t *testing.T) {
	if testing.Short() {
		t.Skip("pauses a redis-server for 7 s")
	}
	rs := redistest.StartVolatile(t)
	s := NewSessionStore(rs.Client(t), SessionOptions{TTL: time.Minute})
	ctx := context.Background()
	resumed := rs.Stall(t, redistest.PastReadTimeout)
	sess, err := s.Create(ctx, Session{User: "u1"})
	<-resumed
	if err != nil {
		t.Fatalf("create during a stall: %v", err)
	}
	got, err := s.Get(ctx, sess.ID)
	if err != nil || got.User != "u1" {
		t.Fatalf("the created session: %+v, %v", got, err)
	}
}
