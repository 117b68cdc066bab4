package recsys

import (
	"fmt"

	"github.com/tandem-ai/tandem/limits"
)

// Limits bounds what the package accepts from files, feedback events and
// shard files. Input that passes a limit is rejected with an error naming
// the line and field, never truncated and never a panic. A zero field takes
// the default written beside it.
type Limits struct {
	// MaxLineBytes bounds one JSONL or CSV line, newline excluded. Default 64 KiB.
	MaxLineBytes int
	// MaxIDBytes bounds user, item, kind and event IDs. Default 256.
	MaxIDBytes int
	// MaxUsers bounds distinct users. Default 50,000,000 (ids are int32).
	MaxUsers int
	// MaxItems bounds distinct items. Default 10,000,000.
	MaxItems int
	// MaxCells bounds distinct (user, item) pairs. Default 1<<31 - 1.
	MaxCells int64
	// MaxAbsValue bounds |value| of one event. Default 1e9.
	MaxAbsValue float64
	// MaxKinds bounds distinct item kinds. Default 4096.
	MaxKinds int
	// MaxK bounds the neighbours kept per row. Default 10,000.
	MaxK int
}

// DefaultLimits returns the limits a zero Limits stands for.
func DefaultLimits() Limits { return Limits{}.withDefaults() }

func (l Limits) withDefaults() Limits {
	if l.MaxLineBytes == 0 {
		l.MaxLineBytes = limits.RecsLineBytes
	}
	if l.MaxIDBytes == 0 {
		l.MaxIDBytes = limits.RecsIDBytes
	}
	if l.MaxUsers == 0 {
		l.MaxUsers = limits.RecsUsers
	}
	if l.MaxItems == 0 {
		l.MaxItems = limits.RecsItems
	}
	if l.MaxCells == 0 {
		l.MaxCells = limits.RecsCells
	}
	if l.MaxAbsValue == 0 {
		l.MaxAbsValue = limits.RecsAbsValue
	}
	if l.MaxKinds == 0 {
		l.MaxKinds = limits.RecsKinds
	}
	if l.MaxK == 0 {
		l.MaxK = limits.RecsK
	}
	return l
}

func (l Limits) validate() error {
	switch {
	case l.MaxLineBytes < 0 || l.MaxLineBytes > 1<<30:
		return fmt.Errorf("limits: MaxLineBytes %d out of range [0, 1<<30]", l.MaxLineBytes)
	case l.MaxIDBytes < 0:
		return fmt.Errorf("limits: MaxIDBytes %d is negative", l.MaxIDBytes)
	case l.MaxUsers < 0 || l.MaxUsers > 1<<31-1:
		return fmt.Errorf("limits: MaxUsers %d out of range [0, 1<<31-1]", l.MaxUsers)
	case l.MaxItems < 0 || l.MaxItems > 1<<31-1:
		return fmt.Errorf("limits: MaxItems %d out of range [0, 1<<31-1]", l.MaxItems)
	case l.MaxCells < 0:
		return fmt.Errorf("limits: MaxCells %d is negative", l.MaxCells)
	case l.MaxAbsValue < 0:
		return fmt.Errorf("limits: MaxAbsValue %g is negative", l.MaxAbsValue)
	case l.MaxKinds < 0 || l.MaxKinds > 1<<16-1:
		return fmt.Errorf("limits: MaxKinds %d out of range [0, 65535]", l.MaxKinds)
	case l.MaxK < 0:
		return fmt.Errorf("limits: MaxK %d is negative", l.MaxK)
	}
	return nil
}
