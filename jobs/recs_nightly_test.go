package jobs

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/tandem-ai/tandem/pipeline"
)

func TestRecsRebuildID(t *testing.T) {
	if got := RecsRebuildID("5f0c-abc_1"); got != "5f0c-abc_1" {
		t.Errorf("a clean id changed to %q", got)
	}
	a, b := RecsRebuildID("recs-nightly:1893549600"), RecsRebuildID("recs-nightly-1893549600")
	if a == b {
		t.Errorf("two task ids gave the same rebuild id %q", a)
	}
	for _, id := range []string{a, RecsRebuildID(strings.Repeat("é/", 200)), RecsRebuildID("")} {
		if err := pipeline.ValidateID(id); err != nil {
			t.Errorf("rebuild id %q: %v", id, err)
		}
	}
}

func TestRecsShardedArgsNameTheField(t *testing.T) {
	for _, tc := range []struct {
		args  pipeline.Validator
		field string
	}{
		{RecsFanoutArgs{Shards: MaxRecsShards + 1}, "shards"},
		{RecsFanoutArgs{Mode: "random"}, "mode"},
		{RecsFanoutArgs{Neighbors: -1}, "neighbors"},
		{RecsShardArgs{Rebuild: "a:b"}, "rebuild"},
		{RecsShardArgs{Rebuild: "r", Shard: -1}, "shard"},
		{RecsShardArgs{Rebuild: "r", Shard: MaxRecsShards}, "shard"},
		{RecsMergeArgs{}, "rebuild"},
		{RecsUserUpdateArgs{}, "user"},
		{RecsUserUpdateArgs{User: strings.Repeat("u", MaxRecsUserBytes+1)}, "user"},
	} {
		err := tc.args.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), tc.field) {
			t.Errorf("%+v: Validate() = %v, want an error naming %s", tc.args, err, tc.field)
		}
	}
	for _, ok := range []pipeline.Validator{RecsFanoutArgs{}, RecsShardArgs{Rebuild: "r"}, RecsMergeArgs{Rebuild: "r"}, RecsUserUpdateArgs{User: "u1"}} {
		if err := ok.Validate(); err != nil {
			t.Errorf("%+v: %v", ok, err)
		}
	}
	if err := ValidatePayload(KindRecsFanout, []byte(`{"shards":8,"neighbors":30}`)); err != nil {
		t.Errorf("a schedule payload: %v", err)
	}
	var out bytes.Buffer
	if err := Exec(context.Background(), NewDeps(nil), KindRecsShard, nil, &out); err == nil || !strings.Contains(err.Error(), KindRecsFanout) {
		t.Errorf("worker exec of a shard: %v, want a pointer to %s", err, KindRecsFanout)
	}
}
