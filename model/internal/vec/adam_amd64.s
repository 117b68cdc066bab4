//go:build amd64 && !purego

#include "textflag.h"

// func adamAsm(p, grad, m, v *float32, n int, c *[9]float32)
// One AdamW step over n elements (a positive multiple of 8). c holds lr,
// beta1, 1-beta1, beta2, 1-beta2, eps, decay (1 - lr*wd), 1/(1-beta1^t),
// 1/(1-beta2^t). Per element:
//   m = beta1*m + (1-beta1)*g
//   v = beta2*v + (1-beta2)*g*g
//   p = p*decay - lr * (m/(1-beta1^t)) / (sqrt(v/(1-beta2^t)) + eps)
TEXT ·adamAsm(SB), NOSPLIT, $0-48
	MOVQ p+0(FP), DI
	MOVQ grad+8(FP), SI
	MOVQ m+16(FP), R8
	MOVQ v+24(FP), R9
	MOVQ n+32(FP), CX
	MOVQ c+40(FP), AX
	VBROADCASTSS 0(AX), Y11
	VBROADCASTSS 4(AX), Y15
	VBROADCASTSS 8(AX), Y14
	VBROADCASTSS 12(AX), Y13
	VBROADCASTSS 16(AX), Y12
	VBROADCASTSS 20(AX), Y10
	VBROADCASTSS 24(AX), Y9
	VBROADCASTSS 28(AX), Y8
	VBROADCASTSS 32(AX), Y7

adamloop:
	VMOVUPS (SI), Y0
	VMULPS (R8), Y15, Y1
	VFMADD231PS Y0, Y14, Y1
	VMOVUPS Y1, (R8)
	VMULPS Y0, Y0, Y2
	VMULPS (R9), Y13, Y3
	VFMADD231PS Y2, Y12, Y3
	VMOVUPS Y3, (R9)
	VMULPS Y7, Y3, Y3
	VSQRTPS Y3, Y3
	VADDPS Y10, Y3, Y3
	VMULPS Y8, Y1, Y1
	VDIVPS Y3, Y1, Y1
	VMULPS Y11, Y1, Y1
	VMULPS (DI), Y9, Y4
	VSUBPS Y1, Y4, Y4
	VMOVUPS Y4, (DI)
	ADDQ $32, DI
	ADDQ $32, SI
	ADDQ $32, R8
	ADDQ $32, R9
	SUBQ $8, CX
	JNZ adamloop
	VZEROUPPER
	RET
