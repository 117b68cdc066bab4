package model

// The four products of a linear layer all go to Sgemm with transposes
// expressed through its flags, never by copying a matrix.

func (k *cpuKernels) MatmulForward(out, inp, weight, bias []float32, N, C, OC int) {
	var beta float32
	if bias != nil {
		// Start from the bias and let the product accumulate onto it: one
		// pass over out instead of a product pass plus a bias pass.
		if !k.pool.split(N, OC) {
			fillRows(out, bias, OC, 0, N)
		} else {
			k.pool.parallelFor(N, 0, func(_, lo, hi int) { fillRows(out, bias, OC, lo, hi) })
		}
		beta = 1
	}
	k.pool.sgemm(false, false, N, OC, C, 1, inp, C, weight, OC, beta, out, OC)
}

func fillRows(out, row []float32, width, lo, hi int) {
	row = row[:width]
	for i := lo; i < hi; i++ {
		copy(out[i*width:i*width+width], row)
	}
}

func (k *cpuKernels) MatmulBackward(dinp, dweight, dbias, dout, inp, weight []float32, N, C, OC int) {
	if dinp != nil {
		k.pool.sgemm(false, true, N, C, OC, 1, dout, OC, weight, OC, 0, dinp, C)
	}
	if dweight != nil {
		k.pool.sgemm(true, false, C, OC, N, 1, inp, C, dout, OC, 1, dweight, OC)
	}
	if dbias != nil {
		if !k.pool.split(N, OC) {
			columnSums(dbias, dout, N, OC, 0, OC)
			return
		}
		k.pool.parallelFor(OC, colGrain(OC, k.pool.size), func(_, lo, hi int) { columnSums(dbias, dout, N, OC, lo, hi) })
	}
}

// columnSums accumulates the sums of columns [lo, hi) of dout[N,OC] into
// dbias; splitting by columns means no two goroutines add into one element.
func columnSums(dbias, dout []float32, N, OC, lo, hi int) {
	db := dbias[lo:hi]
	for i := 0; i < N; i++ {
		g := dout[i*OC+lo : i*OC+hi]
		for c, v := range g {
			db[c] += v
		}
	}
}

func (k *cpuKernels) MatmulTransposedForward(out, inp, weight []float32, N, C, OC int) {
	k.pool.sgemm(false, true, N, OC, C, 1, inp, C, weight, C, 0, out, OC)
}

func (k *cpuKernels) MatmulTransposedBackward(dinp, dweight, dout, inp, weight []float32, N, C, OC int) {
	if dinp != nil {
		k.pool.sgemm(false, false, N, C, OC, 1, dout, OC, weight, C, 0, dinp, C)
	}
	if dweight != nil {
		k.pool.sgemm(true, false, OC, C, N, 1, dout, OC, inp, C, 1, dweight, C)
	}
}
