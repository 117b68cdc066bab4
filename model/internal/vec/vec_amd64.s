// exp(x - shift) for eight floats at a time (AVX2 + FMA): the same
// reduction as Exp, e^x = 2^k * e^r with |r| <= ln2/2, with a
// degree-7 Taylor polynomial for e^r. Rows of constants, eight copies
// each, serve as memory operands and register loads.
//
// Layout (32 bytes per row): -87, 88, log2(e), ln2 high, ln2 low,
// 1/7!, 1/6!, 1/5!, 1/4!, 1/3!, 1/2!, 1, int32 127.

//go:build amd64 && !purego

#include "textflag.h"

DATA expConst<>+0(SB)/4, $0xc2ae0000
DATA expConst<>+4(SB)/4, $0xc2ae0000
DATA expConst<>+8(SB)/4, $0xc2ae0000
DATA expConst<>+12(SB)/4, $0xc2ae0000
DATA expConst<>+16(SB)/4, $0xc2ae0000
DATA expConst<>+20(SB)/4, $0xc2ae0000
DATA expConst<>+24(SB)/4, $0xc2ae0000
DATA expConst<>+28(SB)/4, $0xc2ae0000
DATA expConst<>+32(SB)/4, $0x42b00000
DATA expConst<>+36(SB)/4, $0x42b00000
DATA expConst<>+40(SB)/4, $0x42b00000
DATA expConst<>+44(SB)/4, $0x42b00000
DATA expConst<>+48(SB)/4, $0x42b00000
DATA expConst<>+52(SB)/4, $0x42b00000
DATA expConst<>+56(SB)/4, $0x42b00000
DATA expConst<>+60(SB)/4, $0x42b00000
DATA expConst<>+64(SB)/4, $0x3fb8aa3b
DATA expConst<>+68(SB)/4, $0x3fb8aa3b
DATA expConst<>+72(SB)/4, $0x3fb8aa3b
DATA expConst<>+76(SB)/4, $0x3fb8aa3b
DATA expConst<>+80(SB)/4, $0x3fb8aa3b
DATA expConst<>+84(SB)/4, $0x3fb8aa3b
DATA expConst<>+88(SB)/4, $0x3fb8aa3b
DATA expConst<>+92(SB)/4, $0x3fb8aa3b
DATA expConst<>+96(SB)/4, $0x3f317200
DATA expConst<>+100(SB)/4, $0x3f317200
DATA expConst<>+104(SB)/4, $0x3f317200
DATA expConst<>+108(SB)/4, $0x3f317200
DATA expConst<>+112(SB)/4, $0x3f317200
DATA expConst<>+116(SB)/4, $0x3f317200
DATA expConst<>+120(SB)/4, $0x3f317200
DATA expConst<>+124(SB)/4, $0x3f317200
DATA expConst<>+128(SB)/4, $0x35bfbe8e
DATA expConst<>+132(SB)/4, $0x35bfbe8e
DATA expConst<>+136(SB)/4, $0x35bfbe8e
DATA expConst<>+140(SB)/4, $0x35bfbe8e
DATA expConst<>+144(SB)/4, $0x35bfbe8e
DATA expConst<>+148(SB)/4, $0x35bfbe8e
DATA expConst<>+152(SB)/4, $0x35bfbe8e
DATA expConst<>+156(SB)/4, $0x35bfbe8e
DATA expConst<>+160(SB)/4, $0x39500d01
DATA expConst<>+164(SB)/4, $0x39500d01
DATA expConst<>+168(SB)/4, $0x39500d01
DATA expConst<>+172(SB)/4, $0x39500d01
DATA expConst<>+176(SB)/4, $0x39500d01
DATA expConst<>+180(SB)/4, $0x39500d01
DATA expConst<>+184(SB)/4, $0x39500d01
DATA expConst<>+188(SB)/4, $0x39500d01
DATA expConst<>+192(SB)/4, $0x3ab60b61
DATA expConst<>+196(SB)/4, $0x3ab60b61
DATA expConst<>+200(SB)/4, $0x3ab60b61
DATA expConst<>+204(SB)/4, $0x3ab60b61
DATA expConst<>+208(SB)/4, $0x3ab60b61
DATA expConst<>+212(SB)/4, $0x3ab60b61
DATA expConst<>+216(SB)/4, $0x3ab60b61
DATA expConst<>+220(SB)/4, $0x3ab60b61
DATA expConst<>+224(SB)/4, $0x3c088889
DATA expConst<>+228(SB)/4, $0x3c088889
DATA expConst<>+232(SB)/4, $0x3c088889
DATA expConst<>+236(SB)/4, $0x3c088889
DATA expConst<>+240(SB)/4, $0x3c088889
DATA expConst<>+244(SB)/4, $0x3c088889
DATA expConst<>+248(SB)/4, $0x3c088889
DATA expConst<>+252(SB)/4, $0x3c088889
DATA expConst<>+256(SB)/4, $0x3d2aaaab
DATA expConst<>+260(SB)/4, $0x3d2aaaab
DATA expConst<>+264(SB)/4, $0x3d2aaaab
DATA expConst<>+268(SB)/4, $0x3d2aaaab
DATA expConst<>+272(SB)/4, $0x3d2aaaab
DATA expConst<>+276(SB)/4, $0x3d2aaaab
DATA expConst<>+280(SB)/4, $0x3d2aaaab
DATA expConst<>+284(SB)/4, $0x3d2aaaab
DATA expConst<>+288(SB)/4, $0x3e2aaaab
DATA expConst<>+292(SB)/4, $0x3e2aaaab
DATA expConst<>+296(SB)/4, $0x3e2aaaab
DATA expConst<>+300(SB)/4, $0x3e2aaaab
DATA expConst<>+304(SB)/4, $0x3e2aaaab
DATA expConst<>+308(SB)/4, $0x3e2aaaab
DATA expConst<>+312(SB)/4, $0x3e2aaaab
DATA expConst<>+316(SB)/4, $0x3e2aaaab
DATA expConst<>+320(SB)/4, $0x3f000000
DATA expConst<>+324(SB)/4, $0x3f000000
DATA expConst<>+328(SB)/4, $0x3f000000
DATA expConst<>+332(SB)/4, $0x3f000000
DATA expConst<>+336(SB)/4, $0x3f000000
DATA expConst<>+340(SB)/4, $0x3f000000
DATA expConst<>+344(SB)/4, $0x3f000000
DATA expConst<>+348(SB)/4, $0x3f000000
DATA expConst<>+352(SB)/4, $0x3f800000
DATA expConst<>+356(SB)/4, $0x3f800000
DATA expConst<>+360(SB)/4, $0x3f800000
DATA expConst<>+364(SB)/4, $0x3f800000
DATA expConst<>+368(SB)/4, $0x3f800000
DATA expConst<>+372(SB)/4, $0x3f800000
DATA expConst<>+376(SB)/4, $0x3f800000
DATA expConst<>+380(SB)/4, $0x3f800000
DATA expConst<>+384(SB)/4, $0x0000007f
DATA expConst<>+388(SB)/4, $0x0000007f
DATA expConst<>+392(SB)/4, $0x0000007f
DATA expConst<>+396(SB)/4, $0x0000007f
DATA expConst<>+400(SB)/4, $0x0000007f
DATA expConst<>+404(SB)/4, $0x0000007f
DATA expConst<>+408(SB)/4, $0x0000007f
DATA expConst<>+412(SB)/4, $0x0000007f
GLOBL expConst<>(SB), RODATA|NOPTR, $416

// EXP8 turns Y0 (already shifted) into exp(Y0) in Y2; clobbers Y0, Y1.
#define EXP8 \
	VMAXPS Y0, Y13, Y0 \
	VMINPS Y0, Y12, Y0 \
	VMULPS Y11, Y0, Y1 \
	VROUNDPS $0, Y1, Y1 \
	VFNMADD231PS Y10, Y1, Y0 \
	VFNMADD231PS Y9, Y1, Y0 \
	VMOVUPS expConst<>+160(SB), Y2 \
	VFMADD213PS expConst<>+192(SB), Y0, Y2 \
	VFMADD213PS expConst<>+224(SB), Y0, Y2 \
	VFMADD213PS expConst<>+256(SB), Y0, Y2 \
	VFMADD213PS expConst<>+288(SB), Y0, Y2 \
	VFMADD213PS expConst<>+320(SB), Y0, Y2 \
	VFMADD213PS Y8, Y0, Y2 \
	VFMADD213PS Y8, Y0, Y2 \
	VCVTPS2DQ Y1, Y1 \
	VPADDD Y7, Y1, Y1 \
	VPSLLD $23, Y1, Y1 \
	VMULPS Y1, Y2, Y2

// func expShiftAsm(dst, src *float32, n int, shift, scale float32) float32
// n is a positive multiple of 8. Returns the sum of exp(src[i]-shift);
// when dst is not nil also stores scale*exp(src[i]-shift) to dst[i].
TEXT ·expShiftAsm(SB), NOSPLIT, $0-36
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	VBROADCASTSS shift+24(FP), Y15
	VBROADCASTSS scale+28(FP), Y14
	VMOVUPS expConst<>+0(SB), Y13
	VMOVUPS expConst<>+32(SB), Y12
	VMOVUPS expConst<>+64(SB), Y11
	VMOVUPS expConst<>+96(SB), Y10
	VMOVUPS expConst<>+128(SB), Y9
	VMOVUPS expConst<>+352(SB), Y8
	VMOVUPS expConst<>+384(SB), Y7
	VXORPS Y3, Y3, Y3
	VXORPS Y4, Y4, Y4
	TESTQ DI, DI
	JZ sumonly

store:
	VMOVUPS (SI), Y0
	VSUBPS Y15, Y0, Y0
	EXP8
	VADDPS Y2, Y3, Y3
	VMULPS Y14, Y2, Y2
	VMOVUPS Y2, (DI)
	ADDQ $32, SI
	ADDQ $32, DI
	SUBQ $8, CX
	JNZ store
	JMP done

sumonly:
	VMOVUPS (SI), Y0
	VSUBPS Y15, Y0, Y0
	EXP8
	VADDPS Y2, Y3, Y3
	ADDQ $32, SI
	SUBQ $8, CX
	JNZ sumonly

done:
	VADDPS Y4, Y3, Y3
	VEXTRACTF128 $1, Y3, X4
	VADDPS X4, X3, X3
	VHADDPS X3, X3, X3
	VHADDPS X3, X3, X3
	VZEROUPPER
	MOVSS X3, ret+32(FP)
	RET

// func maxAsm(src *float32, n int) float32
// n is a positive multiple of 8.
TEXT ·maxAsm(SB), NOSPLIT, $0-20
	MOVQ src+0(FP), SI
	MOVQ n+8(FP), CX
	VMOVUPS (SI), Y0

maxloop:
	VMAXPS (SI), Y0, Y0
	ADDQ $32, SI
	SUBQ $8, CX
	JNZ maxloop
	VEXTRACTF128 $1, Y0, X1
	VMAXPS X1, X0, X0
	VPERMILPS $0x4e, X0, X1
	VMAXPS X1, X0, X0
	VPERMILPS $0xb1, X0, X1
	VMAXPS X1, X0, X0
	VZEROUPPER
	MOVSS X0, ret+16(FP)
	RET
