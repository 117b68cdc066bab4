package pipeline

import "testing"

func TestStreamReplicasFromEnv(t *testing.T) {
	cases := []struct {
		val     string
		want    int
		wantErr bool
	}{{"", 1, false}, {"3", 3, false}, {"0", 0, true}, {"6", 0, true}, {"three", 0, true}}
	for _, c := range cases {
		t.Setenv(StreamReplicasEnv, c.val)
		got, err := StreamReplicas()
		if (err != nil) != c.wantErr || got != c.want {
			t.Errorf("%s=%q: got %d, %v; want %d, error %v", StreamReplicasEnv, c.val, got, err, c.want, c.wantErr)
		}
	}
}
