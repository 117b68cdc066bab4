//go:build !amd64 || purego

package vec

const useAVX2 = false

func expShiftAsm(dst, src *float32, n int, shift, scale float32) float32 { panic("unreachable") }

func maxAsm(src *float32, n int) float32 { panic("unreachable") }

func axpyPanel4(x *float32, ldx int, w *float32, ldw int, y *float32, ldy int, nblocks int) {
	panic("unreachable")
}

func axpyPanel1(x *float32, w *float32, ldw int, y *float32, nblocks int) { panic("unreachable") }

func dotRows4(k int, x *float32, ldx int, w *float32, ldw int, y *float32, ldy int, nrows int) {
	panic("unreachable")
}

func dotRows1(k int, x *float32, w *float32, ldw int, y *float32, nrows int) { panic("unreachable") }

func adamAsm(p, grad, m, v *float32, n int, c *[9]float32) { panic("unreachable") }
