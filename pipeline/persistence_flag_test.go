package pipeline

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"log/slog"
	"strconv"
	"strings"
	"testing"
)

func TestEnforcePersistence(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, c := range []struct {
		name    string
		conf    []string
		persist bool
	}{
		{"appendonly", []string{"appendonly yes", `save ""`}, true},
		{"rdb snapshots", []string{"appendonly no", "save 900 1"}, true},
		{"none", []string{"appendonly no", `save ""`}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			port := startRedisServer(t, false, c.conf...)
			cfg := DefaultConfig()
			cfg.RedisURL = "redis://127.0.0.1:" + strconv.Itoa(port) + "/0"
			rdb, err := cfg.RedisClient()
			if err != nil {
				t.Fatal(err)
			}
			defer rdb.Close()
			for _, require := range []bool{false, true} {
				var logs bytes.Buffer
				err := EnforcePersistence(ctx, rdb, require, slog.New(slog.NewTextHandler(&logs, nil)))
				switch {
				case c.persist && (err != nil || logs.Len() > 0):
					t.Errorf("require=%v: err %v, logs %q; want silence", require, err, logs.String())
				case !c.persist && require && !errors.Is(err, ErrNoRedisPersistence):
					t.Errorf("require=true: err %v, want ErrNoRedisPersistence", err)
				case !c.persist && require && !strings.Contains(err.Error(), "appendonly"):
					t.Errorf("error does not say what to enable: %v", err)
				case !c.persist && !require && (err != nil || !strings.Contains(logs.String(), "level=WARN")):
					t.Errorf("require=false: err %v, logs %q; want a warning", err, logs.String())
				}
			}
			if err := cfg.EnforceRedisPersistence(ctx, true, nil); (err == nil) != c.persist {
				t.Errorf("Config.EnforceRedisPersistence: %v", err)
			}
		})
	}
}

// TestEnforcePersistenceConfigDisabled: managed Redis services rename
// CONFIG away; the check falls back to INFO, which only tells about AOF.
func TestEnforcePersistenceConfigDisabled(t *testing.T) {
	t.Parallel()
	port := startRedisServer(t, false, "appendonly no", `save ""`, `rename-command CONFIG ""`)
	cfg := DefaultConfig()
	cfg.RedisURL = "redis://127.0.0.1:" + strconv.Itoa(port) + "/0"
	if err := cfg.EnforceRedisPersistence(context.Background(), true, nil); !errors.Is(err, ErrNoRedisPersistence) || !strings.Contains(err.Error(), "CONFIG is disabled") {
		t.Fatalf("CONFIG disabled, no AOF: %v", err)
	}
}

func TestRequirePersistenceFlag(t *testing.T) {
	for env, want := range map[string]bool{"": false, "true": true, "1": true, "false": false, "0": false, "yes please": true} {
		t.Setenv(RequirePersistenceEnv, env)
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		p := RequirePersistenceFlag(fs)
		if *p != want {
			t.Errorf("$%s=%q: default %v, want %v", RequirePersistenceEnv, env, *p, want)
		}
		if err := fs.Parse([]string{"--require-redis-persistence=false"}); err != nil || *p {
			t.Errorf("flag does not override the environment: %v %v", *p, err)
		}
	}
}
