//go:build amd64 && !purego

#include "textflag.h"

// Small-M matrix products without packing. OpenBLAS first copies B into
// panels, which for a handful of rows (decoding a batch of sequences)
// costs more memory traffic than the product itself. These kernels stream
// B (the weights) exactly once per four rows of A, keeping the rows of A
// in L1.

// func axpyPanel4(x *float32, ldx int, w *float32, ldw int, y *float32, ldy int, nblocks int)
// A panel of four rows of w times four columns of x, for four rows:
//   y[r, 16j:16j+16] += sum_{kk<4} x[r, kk] * w[kk, 16j:16j+16]
// for r in 0..3 and each block j. The four rows of w stream sequentially
// (prefetcher-friendly); y stays in cache across panels. Strides are in
// elements.
TEXT ·axpyPanel4(SB), NOSPLIT, $0-56
	MOVQ x+0(FP), BX
	MOVQ ldx+8(FP), CX
	SHLQ $2, CX
	MOVQ w+16(FP), DX
	MOVQ ldw+24(FP), SI
	SHLQ $2, SI
	LEAQ (SI)(SI*2), R9
	MOVQ y+32(FP), R13
	MOVQ ldy+40(FP), R8
	SHLQ $2, R8
	MOVQ nblocks+48(FP), DI

panel4:
	VMOVUPS (DX), Y0
	VMOVUPS 32(DX), Y1
	VMOVUPS (DX)(SI*1), Y2
	VMOVUPS 32(DX)(SI*1), Y3
	VMOVUPS (DX)(SI*2), Y4
	VMOVUPS 32(DX)(SI*2), Y5
	VMOVUPS (DX)(R9*1), Y6
	VMOVUPS 32(DX)(R9*1), Y7
	MOVQ R13, R10
	MOVQ BX, R11
	MOVQ $4, AX

rows4:
	VMOVUPS (R10), Y8
	VMOVUPS 32(R10), Y9
	VBROADCASTSS (R11), Y10
	VBROADCASTSS 4(R11), Y11
	VBROADCASTSS 8(R11), Y12
	VBROADCASTSS 12(R11), Y13
	VFMADD231PS Y0, Y10, Y8
	VFMADD231PS Y1, Y10, Y9
	VFMADD231PS Y2, Y11, Y8
	VFMADD231PS Y3, Y11, Y9
	VFMADD231PS Y4, Y12, Y8
	VFMADD231PS Y5, Y12, Y9
	VFMADD231PS Y6, Y13, Y8
	VFMADD231PS Y7, Y13, Y9
	VMOVUPS Y8, (R10)
	VMOVUPS Y9, 32(R10)
	ADDQ R8, R10
	ADDQ CX, R11
	DECQ AX
	JNZ rows4

	ADDQ $64, DX
	ADDQ $64, R13
	DECQ DI
	JNZ panel4
	VZEROUPPER
	RET

// func axpyPanel1(x *float32, w *float32, ldw int, y *float32, nblocks int)
// axpyPanel4 for a single row of x and y.
TEXT ·axpyPanel1(SB), NOSPLIT, $0-40
	MOVQ x+0(FP), BX
	MOVQ w+8(FP), DX
	MOVQ ldw+16(FP), SI
	SHLQ $2, SI
	LEAQ (SI)(SI*2), R9
	MOVQ y+24(FP), R13
	MOVQ nblocks+32(FP), DI
	VBROADCASTSS (BX), Y10
	VBROADCASTSS 4(BX), Y11
	VBROADCASTSS 8(BX), Y12
	VBROADCASTSS 12(BX), Y13

panel1:
	VMOVUPS (R13), Y8
	VMOVUPS 32(R13), Y9
	VFMADD231PS (DX), Y10, Y8
	VFMADD231PS 32(DX), Y10, Y9
	VFMADD231PS (DX)(SI*1), Y11, Y8
	VFMADD231PS 32(DX)(SI*1), Y11, Y9
	VFMADD231PS (DX)(SI*2), Y12, Y8
	VFMADD231PS 32(DX)(SI*2), Y12, Y9
	VFMADD231PS (DX)(R9*1), Y13, Y8
	VFMADD231PS 32(DX)(R9*1), Y13, Y9
	VMOVUPS Y8, (R13)
	VMOVUPS Y9, 32(R13)
	ADDQ $64, DX
	ADDQ $64, R13
	DECQ DI
	JNZ panel1
	VZEROUPPER
	RET

// func dotRows4(k int, x *float32, ldx int, w *float32, ldw int, y *float32, ldy int, nrows int)
// For each row j of w and r in 0..3: y[r, j] += dot(x[r, :k], w[j, :k]).
// k is a positive multiple of 8; nrows >= 1. Each dot product is summed in
// exactly the order dotRows1 uses, so a row's result does not depend on
// the rows computed with it.
TEXT ·dotRows4(SB), NOSPLIT, $0-64
	MOVQ k+0(FP), R9
	SHRQ $3, R9
	MOVQ x+8(FP), BX
	MOVQ ldx+16(FP), CX
	SHLQ $2, CX
	LEAQ (CX)(CX*2), R12
	MOVQ w+24(FP), R11
	MOVQ ldw+32(FP), SI
	SHLQ $2, SI
	MOVQ y+40(FP), R13
	MOVQ ldy+48(FP), R8
	SHLQ $2, R8
	MOVQ nrows+56(FP), DI

row4:
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	MOVQ R11, DX
	MOVQ BX, R10
	MOVQ R9, AX

dot4:
	VMOVUPS (DX), Y8
	VFMADD231PS (R10), Y8, Y0
	VFMADD231PS (R10)(CX*1), Y8, Y1
	VFMADD231PS (R10)(CX*2), Y8, Y2
	VFMADD231PS (R10)(R12*1), Y8, Y3
	ADDQ $32, DX
	ADDQ $32, R10
	DECQ AX
	JNZ dot4

	// Lane sums ((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7)) for all four:
	// X0 = [s0, s1, s2, s3].
	VHADDPS Y1, Y0, Y0
	VHADDPS Y3, Y2, Y2
	VHADDPS Y2, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0

	MOVQ R13, DX
	VADDSS (DX), X0, X2
	VMOVSS X2, (DX)
	ADDQ R8, DX
	VPERMILPS $0x39, X0, X0
	VADDSS (DX), X0, X2
	VMOVSS X2, (DX)
	ADDQ R8, DX
	VPERMILPS $0x39, X0, X0
	VADDSS (DX), X0, X2
	VMOVSS X2, (DX)
	ADDQ R8, DX
	VPERMILPS $0x39, X0, X0
	VADDSS (DX), X0, X2
	VMOVSS X2, (DX)

	ADDQ SI, R11
	ADDQ $4, R13
	DECQ DI
	JNZ row4
	VZEROUPPER
	RET

// func dotRows1(k int, x *float32, w *float32, ldw int, y *float32, nrows int)
// y[j] += dot(x[:k], w[j, :k]) for each row j; k a positive multiple of 8.
TEXT ·dotRows1(SB), NOSPLIT, $0-48
	MOVQ k+0(FP), R9
	SHRQ $3, R9
	MOVQ x+8(FP), BX
	MOVQ w+16(FP), R11
	MOVQ ldw+24(FP), SI
	SHLQ $2, SI
	MOVQ y+32(FP), R13
	MOVQ nrows+40(FP), DI

row1:
	VXORPS Y0, Y0, Y0
	MOVQ R11, DX
	MOVQ BX, R10
	MOVQ R9, AX

dot1:
	VMOVUPS (DX), Y8
	VFMADD231PS (R10), Y8, Y0
	ADDQ $32, DX
	ADDQ $32, R10
	DECQ AX
	JNZ dot1

	// The same lane order as dotRows4.
	VHADDPS Y0, Y0, Y0
	VHADDPS Y0, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDSS X1, X0, X0
	VADDSS (R13), X0, X2
	VMOVSS X2, (R13)
	ADDQ SI, R11
	ADDQ $4, R13
	DECQ DI
	JNZ row1
	VZEROUPPER
	RET
