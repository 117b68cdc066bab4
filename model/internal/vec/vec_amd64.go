//go:build amd64 && !purego

package vec

import "golang.org/x/sys/cpu"

var useAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA

// expShiftAsm: n is a positive multiple of 8; dst may be nil (sum only).
//
//go:noescape
func expShiftAsm(dst, src *float32, n int, shift, scale float32) float32

// maxAsm: n is a positive multiple of 8.
//
//go:noescape
func maxAsm(src *float32, n int) float32

//go:noescape
func axpyPanel4(x *float32, ldx int, w *float32, ldw int, y *float32, ldy int, nblocks int)

//go:noescape
func axpyPanel1(x *float32, w *float32, ldw int, y *float32, nblocks int)

//go:noescape
func dotRows4(k int, x *float32, ldx int, w *float32, ldw int, y *float32, ldy int, nrows int)

//go:noescape
func dotRows1(k int, x *float32, w *float32, ldw int, y *float32, nrows int)

//go:noescape
func adamAsm(p, grad, m, v *float32, n int, c *[9]float32)
