//go:build race

package jobs

// raceBuild shortens the fine-tuning tests: the race detector slows the
// pure-Go training kernels about tenfold.
const raceBuild = true
