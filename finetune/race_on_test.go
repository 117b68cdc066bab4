//go:build race

package finetune

// raceBuild shrinks the training tests: the race detector slows the
// pure-Go kernels about tenfold.
const raceBuild = true
