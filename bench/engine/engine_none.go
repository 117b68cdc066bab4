//go:build !engine

// Until package generation lands, the engine side (engine_side.go) builds
// only with -tags engine; without it the benchmark runs the baseline alone.
// Delete this file when the tag goes.

package main

import (
	"errors"

	"github.com/tandem-ai/tandem/model"
)

func newEngineSide(*model.Model, engineFlags) (side, error) {
	return nil, errors.New("not built: the engine side needs -tags engine until package generation lands")
}
