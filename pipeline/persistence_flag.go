package pipeline

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// RequirePersistenceEnv is the environment variable behind the
// --require-redis-persistence flag.
const RequirePersistenceEnv = "TANDEM_REQUIRE_REDIS_PERSISTENCE"

// persistenceCheckTimeout bounds the CONFIG GET / INFO round trips at start.
const persistenceCheckTimeout = 10 * time.Second

// ErrNoRedisPersistence is returned by EnforcePersistence when persistence is
// required and Redis does not (or cannot be shown to) persist.
var ErrNoRedisPersistence = errors.New("redis persistence required")

// EnforcePersistence checks that the Redis behind rdb persists its data
// (CheckRedisPersistence). Without persistence a Redis restart loses every
// queued job, so with require it refuses (an ErrNoRedisPersistence error),
// and otherwise logs a warning and returns nil. A check that cannot run (no
// CONFIG and no INFO) counts as no persistence.
func EnforcePersistence(ctx context.Context, rdb redis.UniversalClient, require bool, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.Default()
	}
	ctx, cancel := context.WithTimeout(ctx, persistenceCheckTimeout)
	defer cancel()
	warning, err := CheckRedisPersistence(ctx, rdb)
	switch {
	case err != nil && require:
		return fmt.Errorf("%w, but it cannot be checked: %w", ErrNoRedisPersistence, err)
	case err != nil:
		logger.Warn("could not check whether Redis persists its data", "err", err)
		return nil
	case warning == "":
		return nil
	case require:
		return fmt.Errorf("%w ($%s): %s", ErrNoRedisPersistence, RequirePersistenceEnv, warning)
	}
	logger.Warn(warning, "hint", "--require-redis-persistence (or $"+RequirePersistenceEnv+"=true) makes this an error")
	return nil
}

// EnforceRedisPersistence runs EnforcePersistence with a client built from
// c, for binaries that hold no go-redis client of their own.
func (c Config) EnforceRedisPersistence(ctx context.Context, require bool, logger *slog.Logger) error {
	rdb, err := c.RedisClient()
	if err != nil {
		return err
	}
	defer rdb.Close()
	return EnforcePersistence(ctx, rdb, require, logger)
}

// RequirePersistenceFlag registers --require-redis-persistence on fs, its
// default taken from $TANDEM_REQUIRE_REDIS_PERSISTENCE (an unparsable value
// counts as true: the operator asked for safety).
func RequirePersistenceFlag(fs *flag.FlagSet) *bool {
	def := false
	if v, ok := os.LookupEnv(RequirePersistenceEnv); ok && v != "" {
		b, err := strconv.ParseBool(v)
		def = err != nil || b
	}
	return fs.Bool("require-redis-persistence", def,
		"refuse to start unless Redis keeps an append-only file or RDB snapshots ($"+RequirePersistenceEnv+")")
}
