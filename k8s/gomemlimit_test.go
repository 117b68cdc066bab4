package k8s

import (
	"fmt"
	"regexp"
	"strconv"

	corev1 "k8s.io/api/core/v1"
)

// goMemLimit matches GOMEMLIMIT's syntax (runtime/debug.SetMemoryLimit):
// bytes, or a number with a B, KiB, MiB, GiB or TiB suffix.
var goMemLimit = regexp.MustCompile(`^([0-9]+)(B|KiB|MiB|GiB|TiB)?$`)

// goMemLimitBytes parses a GOMEMLIMIT value.
func goMemLimitBytes(s string) (int64, error) {
	m := goMemLimit.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("%q is not a size such as 640MiB", s)
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return 0, err
	}
	shift := map[string]uint{"": 0, "B": 0, "KiB": 10, "MiB": 20, "GiB": 30, "TiB": 40}[m[2]]
	return n << shift, nil
}

// checkGoMemLimit: a container that sets GOMEMLIMIT sets a size Go reads,
// below 90% of its memory limit. Go counts only its own memory against
// GOMEMLIMIT, and an overlay that shrinks the limit must shrink it too, or
// the collector waits for a heap the kernel never lets the pod reach.
func checkGoMemLimit(b *bundle) []error {
	var errs []error
	for _, pt := range b.podTemplates() {
		for _, cr := range pt.containers() {
			env, err := b.env(cr.c)
			if err != nil {
				continue // checkTandemConfig and checkReferences report it
			}
			v, ok := env["GOMEMLIMIT"]
			if !ok {
				continue
			}
			n, err := goMemLimitBytes(v.value)
			limit, hasLimit := cr.c.Resources.Limits[corev1.ResourceMemory]
			switch {
			case err != nil:
				errs = append(errs, fmt.Errorf("%s: GOMEMLIMIT: %w", cr.where, err))
			case !hasLimit:
				errs = append(errs, fmt.Errorf("%s: GOMEMLIMIT %s without a memory limit", cr.where, v.value))
			case float64(n) > 0.9*float64(limit.Value()):
				errs = append(errs, fmt.Errorf("%s: GOMEMLIMIT %s is above 90%% of the memory limit %s", cr.where, v.value, limit.String()))
			}
		}
	}
	return errs
}
