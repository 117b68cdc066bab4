//go:build !cuda

package main

import "github.com/tandem-ai/tandem/gpu"

// benchGPU needs the cuda build.
func benchGPU(options, map[string]any) error { return gpu.ErrNotBuilt }
