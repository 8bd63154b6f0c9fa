//go:build !purego

#include "textflag.h"

// AVX2 bfloat16 kernels, 8 elements per iteration; n is a multiple of 8
// (the Go wrappers in bf16_amd64.go do the tail). Each computes exactly
// what the scalar code in kernels.go computes: multiply, then add, then
// round to nearest even with F32ToBF16's NaN rule, so the two paths give
// the same bits (but for which NaN a sum of two NaNs gives).

// BF16CONSTS loads the constants NARROW uses into Y11..Y15.
#define BF16CONSTS \
	MOVL $0x7fff, AX \
	MOVQ AX, X15 \
	VPBROADCASTD X15, Y15 \
	MOVL $1, AX \
	MOVQ AX, X14 \
	VPBROADCASTD X14, Y14 \
	MOVL $0x7fffffff, AX \
	MOVQ AX, X13 \
	VPBROADCASTD X13, Y13 \
	MOVL $0x7f800000, AX \
	MOVQ AX, X12 \
	VPBROADCASTD X12, Y12 \
	MOVL $0x40, AX \
	MOVQ AX, X11 \
	VPBROADCASTD X11, Y11

// NARROW rounds the 8 float32 in Y0 to bfloat16 in X3 (F32ToBF16):
// h = (u + 0x7fff + (u>>16)&1) >> 16, or (u>>16)|0x40 for a NaN.
// Clobbers Y1, Y2.
#define NARROW \
	VPSRLD $16, Y0, Y1 \
	VPAND Y14, Y1, Y2 \
	VPADDD Y15, Y0, Y3 \
	VPADDD Y2, Y3, Y3 \
	VPSRLD $16, Y3, Y3 \
	VPOR Y11, Y1, Y1 \
	VPAND Y13, Y0, Y2 \
	VPCMPGTD Y12, Y2, Y2 \
	VPBLENDVB Y2, Y1, Y3, Y3 \
	VPACKUSDW Y3, Y3, Y3 \
	VPERMQ $0x08, Y3, Y3

// func encodeBF16AVX2(w *uint16, src *float32, n int, scale float32)
TEXT ·encodeBF16AVX2(SB), NOSPLIT, $0-28
	MOVQ w+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	VBROADCASTSS scale+24(FP), Y10
	BF16CONSTS
encloop:
	CMPQ CX, $8
	JLT encdone
	VMOVUPS (SI), Y0
	VMULPS Y10, Y0, Y0
	NARROW
	VMOVDQU X3, (DI)
	ADDQ $32, SI
	ADDQ $16, DI
	SUBQ $8, CX
	JMP encloop
encdone:
	VZEROUPPER
	RET

// func accumulateBF16AVX2(w *uint16, local *float32, n int, scale float32)
TEXT ·accumulateBF16AVX2(SB), NOSPLIT, $0-28
	MOVQ w+0(FP), DI
	MOVQ local+8(FP), SI
	MOVQ n+16(FP), CX
	VBROADCASTSS scale+24(FP), Y10
	BF16CONSTS
accloop:
	CMPQ CX, $8
	JLT accdone
	VPMOVZXWD (DI), Y4
	VPSLLD $16, Y4, Y4
	VMOVUPS (SI), Y0
	VMULPS Y10, Y0, Y0
	VADDPS Y4, Y0, Y0
	NARROW
	VMOVDQU X3, (DI)
	ADDQ $32, SI
	ADDQ $16, DI
	SUBQ $8, CX
	JMP accloop
accdone:
	VZEROUPPER
	RET

// func finishBF16AVX2(out, local *float32, w *uint16, n int, scale, post float32)
TEXT ·finishBF16AVX2(SB), NOSPLIT, $0-40
	MOVQ out+0(FP), BX
	MOVQ local+8(FP), SI
	MOVQ w+16(FP), DI
	MOVQ n+24(FP), CX
	VBROADCASTSS scale+32(FP), Y10
	VBROADCASTSS post+36(FP), Y9
	BF16CONSTS
finloop:
	CMPQ CX, $8
	JLT findone
	VPMOVZXWD (DI), Y4
	VPSLLD $16, Y4, Y4
	VMOVUPS (SI), Y0
	VMULPS Y10, Y0, Y0
	VADDPS Y4, Y0, Y0
	VMULPS Y9, Y0, Y0
	NARROW
	VMOVDQU X3, (DI)
	VPMOVZXWD X3, Y4
	VPSLLD $16, Y4, Y4
	VMOVUPS Y4, (BX)
	ADDQ $32, SI
	ADDQ $32, BX
	ADDQ $16, DI
	SUBQ $8, CX
	JMP finloop
findone:
	VZEROUPPER
	RET

// func gatherBF16AVX2(out *float32, w *uint16, n int)
TEXT ·gatherBF16AVX2(SB), NOSPLIT, $0-24
	MOVQ out+0(FP), BX
	MOVQ w+8(FP), DI
	MOVQ n+16(FP), CX
gatloop:
	CMPQ CX, $8
	JLT gatdone
	VPMOVZXWD (DI), Y4
	VPSLLD $16, Y4, Y4
	VMOVUPS Y4, (BX)
	ADDQ $32, BX
	ADDQ $16, DI
	SUBQ $8, CX
	JMP gatloop
gatdone:
	VZEROUPPER
	RET
