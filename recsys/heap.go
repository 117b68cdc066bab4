package recsys

import "slices"

// ranked is an element of a bounded heap: a.outranks(b) means a comes
// before b in the final order. The order must be total (ties broken by ID)
// so that results do not depend on the order candidates arrive in.
type ranked[T any] interface {
	outranks(T) bool
}

// bounded keeps the n best elements pushed so far in a binary heap whose
// root is the worst of them, so most candidates cost one comparison.
type bounded[T ranked[T]] struct {
	n int
	h []T
}

func (b *bounded[T]) reset(n int) {
	b.n = n
	b.h = b.h[:0]
}

// full reports whether a new element must beat the root to get in.
func (b *bounded[T]) full() bool { return len(b.h) >= b.n }

func (b *bounded[T]) push(x T) {
	h := b.h
	if len(h) < b.n {
		h = append(h, x)
		for i := len(h) - 1; i > 0; { // sift up: worse elements rise to the root
			p := (i - 1) / 2
			if !h[p].outranks(h[i]) {
				break
			}
			h[p], h[i] = h[i], h[p]
			i = p
		}
		b.h = h
		return
	}
	if !x.outranks(h[0]) {
		return
	}
	h[0] = x
	for i := 0; ; { // sift down
		l, r, w := 2*i+1, 2*i+2, i
		if l < len(h) && h[w].outranks(h[l]) {
			w = l
		}
		if r < len(h) && h[w].outranks(h[r]) {
			w = r
		}
		if w == i {
			break
		}
		h[i], h[w] = h[w], h[i]
		i = w
	}
}

// sorted returns the kept elements best first. It reorders the heap's
// storage in place, so reset before pushing again.
func (b *bounded[T]) sorted() []T {
	slices.SortFunc(b.h, func(x, y T) int {
		switch {
		case x.outranks(y):
			return -1
		case y.outranks(x):
			return 1
		}
		return 0
	})
	return b.h
}
