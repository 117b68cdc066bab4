package model

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// workPool is a fixed set of goroutines that share the chunks of one
// parallel loop with the calling goroutine. A loop is cut into chunks that
// participants claim from an atomic counter, so uneven chunks (ragged decode
// rows, causal attention) balance themselves. The caller always takes part
// and never waits for a helper that has not started: when the helpers are
// busy with another loop (another model on another goroutine, or a nested
// loop) the caller simply runs every chunk itself. That makes nesting and
// concurrent callers deadlock-free.
type workPool struct {
	size int // participants per loop, the caller included
	jobs chan *poolJob
}

type poolJob struct {
	fn       func(part, lo, hi int)
	n, grain int
	nChunks  int64
	next     atomic.Int64 // next chunk to claim
	parts    atomic.Int64 // next participant index to hand out
	wg       sync.WaitGroup
}

func newWorkPool(size int) *workPool {
	if size < 1 {
		size = 1
	}
	p := &workPool{size: size, jobs: make(chan *poolJob, 4*size)}
	for i := 1; i < size; i++ {
		go p.worker()
	}
	return p
}

var (
	defaultPoolOnce sync.Once
	defaultPool     *workPool
)

// sharedPool is the process-wide pool, one participant per usable CPU.
func sharedPool() *workPool {
	defaultPoolOnce.Do(func() { defaultPool = newWorkPool(runtime.GOMAXPROCS(0)) })
	return defaultPool
}

func (p *workPool) worker() {
	for j := range p.jobs {
		j.runChunks(int(j.parts.Add(1)) - 1)
	}
}

func (j *poolJob) runChunks(part int) {
	for {
		c := j.next.Add(1) - 1
		if c >= j.nChunks {
			return
		}
		lo := int(c) * j.grain
		hi := min(lo+j.grain, j.n)
		j.fn(part, lo, hi)
		j.wg.Done()
	}
}

// parallelFor calls fn over [0, n) in chunks of grain items. part is the
// index of the participant running the chunk, in [0, p.size): callers use it
// to pick a private scratch area. grain <= 0 means n / size (one chunk per
// participant).
func (p *workPool) parallelFor(n, grain int, fn func(part, lo, hi int)) {
	if n <= 0 {
		return
	}
	if grain <= 0 {
		grain = (n + p.size - 1) / p.size
	}
	nChunks := (n + grain - 1) / grain
	if nChunks == 1 || p.size == 1 {
		fn(0, 0, n)
		return
	}
	j := &poolJob{fn: fn, n: n, grain: grain, nChunks: int64(nChunks)}
	j.wg.Add(nChunks)
	j.parts.Store(1) // the caller is participant 0
	helpers := min(p.size-1, nChunks-1)
	for i := 0; i < helpers; i++ {
		select {
		case p.jobs <- j:
		default: // helpers are saturated; the caller does the rest
		}
	}
	j.runChunks(0)
	j.wg.Wait()
}

// serialBelow is the amount of work (roughly, scalar operations) under
// which a loop is not worth handing to other goroutines.
const serialBelow = 1 << 14

// split reports whether n items of cost width each are worth spreading
// over the pool. Kernels test it first and call their loop body directly
// otherwise, so small calls (decoding one token) build no closure at all.
func (p *workPool) split(n, width int) bool {
	return p.size > 1 && n > 1 && n*width >= serialBelow
}

// colGrain is the block width for loops split by columns: one block per
// participant, rounded to whole cache lines.
func colGrain(n, parts int) int {
	return max(16, ((n+parts-1)/parts+15)/16*16)
}
