package recsys

import (
	"context"
	"errors"
	"slices"
	"testing"
)

func TestPopularPublishedWithGeneration(t *testing.T) {
	rdb := redisClient(t)
	ctx := context.Background()
	m := handModel(t)
	// Popularity counts users with a positive value: x and y by two or
	// three, z and w by one, v (rejected) by none.
	pop, err := m.Popular(RecOptions{N: 3})
	if err != nil {
		t.Fatal(err)
	}
	cold, err := m.Recommend("nobody", RecOptions{N: 3})
	if err != nil {
		t.Fatal(err)
	}
	if !sameRecs(pop, cold) || len(pop) != 3 || pop[0].Item != "y" {
		t.Fatalf("Popular = %v, want the cold-start list %v headed by y", pop, cold)
	}
	all, err := m.All(RecOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s := NewRedisStore(rdb, RedisStoreOptions{Batch: 1})
	gen, n, err := s.Publish(ctx, WithPopular(all, pop))
	if err != nil || n != 4 {
		t.Fatalf("Publish: %d lists, %v; want 3 users and the popular list", n, err)
	}
	got, ok, err := s.Popular(ctx, gen)
	if err != nil || !ok || !sameRecs(got, pop) {
		t.Fatalf("Popular(%d) = %v %v %v, want %v", gen, got, ok, err, pop)
	}
	var users []string
	if err := s.Users(ctx, gen, func(u string) error { users = append(users, u); return nil }); err != nil {
		t.Fatal(err)
	}
	slices.Sort(users)
	if !slices.Equal(slices.Compact(users), []string{"a", "b", "c"}) {
		t.Fatalf("Users = %v, want a b c without the popular field", users)
	}
	stop := errors.New("stop")
	if err := s.Users(ctx, gen, func(string) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("Users did not pass on fn's error: %v", err)
	}
	// A generation made by UpdateUser has no popular list.
	rdb.FlushDB(ctx)
	g2, err := s.UpdateUser(ctx, "a", pop)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := s.Popular(ctx, g2); ok || err != nil {
		t.Fatalf("Popular of an UpdateUser generation: ok=%v err=%v", ok, err)
	}
}
