/* GEMMs of the fused passes (see hoconv_native.h): register tiles, a channels-first output
   straight from the last GEMM (register transposes), rows stored in either layout, frames
   packed for the GEMMs.

   GEMMs: a 6-row x 64-column register tile (24 accumulators of 16 floats), B rows streamed,
   A broadcast; ~112-114 GFLOP/s per Zen 4 core in cache (MKL's multi-threaded GEMM over the
   whole tensor: 137-156 GFLOP/s on 2 cores). */
#include "hoconv_native.h"
#ifdef __AVX512F__
#include <immintrin.h>
#endif

/* The register tile of the GEMMs, MR rows x 16 NVMAX columns of accumulators, sized to the
   vector registers: AVX-512 6 x 64 (24 of its 32 zmm), AVX2 6 x 16 (12 of its 16 ymm, plus 2
   for a B row and 1 for the broadcast A value), SSE 3 x 16 (12 of its 16 xmm). A wider tile
   than the registers spills every accumulator to the stack at each FMA (the AVX2 build of
   the 6 x 64 tile ran the layer 3-3.5x slower than the eager kernels). */
#if defined(__AVX512F__)
#define MR 6
#define NVMAX 4
#elif defined(__AVX2__)
#define MR 6
#define NVMAX 1
#else
#define MR 3
#define NVMAX 1
#endif

static inline void st_stream(float* p, vf v) {
#ifdef __AVX512F__
  _mm512_stream_ps(p, (__m512)v);
#else
  st(p, v);
#endif
}

/* Makes the STREAM stores of this thread visible (call before a parallel region ends). */
void stream_fence(void) {
#ifdef __AVX512F__
  _mm_sfence();
#endif
}

/* C[i, 16 j] (ldc) = (acc ? C : init) + sum_k A[i as + k ak] B[k ldb + 16 j], i < mr <= MR,
   j < NV * L16; init: a row every row of C starts from (NULL: zeros). A last tile of mr < MR rows
   computes its last row again in the spare accumulators (reads only, never stored): a
   one-row kernel would chain every FMA on one accumulator (4x slower per row, and GEMMs of
   64 rows, e.g. 2-D frames or the parameter gradients, have 4 such rows). Every loop over
   the accumulators has constant bounds and is unrolled, so GCC keeps them in registers: with
   a runtime row count in the loops it copied all 24 through the stack before and after the
   K loop, a 7 % loss at K = 64 (105 -> 114 GFLOP/s per core in cache). */
#define TILE(NV)                                                                          \
  static void tile##NV(long K, const float* A, long as, long ak, const float* B, long ldb,  \
                       float* C, long ldc, long mr, int mode, const float* init) {         \
    vf c[MR][NV * L16], b[NV * L16];                                                                  \
    const float* ar[MR];                                                                   \
    _Pragma("GCC unroll 8") for (int i = 0; i < MR; ++i) ar[i] = A + lmin(i, mr - 1) * as; \
    if (mode == ACCUM) {                                                                   \
      _Pragma("GCC unroll 8") for (int i = 0; i < MR; ++i)                                 \
        _Pragma("GCC unroll 4") for (int j = 0; j < NV * L16; ++j)                               \
          c[i][j] = ld(C + lmin(i, mr - 1) * ldc + VW * j);                                \
    } else {                                                                               \
      _Pragma("GCC unroll 4") for (int j = 0; j < NV * L16; ++j) b[j] = init ? ld(init + VW * j) : bc(0.f); \
      _Pragma("GCC unroll 8") for (int i = 0; i < MR; ++i)                                 \
        _Pragma("GCC unroll 4") for (int j = 0; j < NV * L16; ++j) c[i][j] = b[j];               \
    }                                                                                      \
    for (long k = 0; k < K; ++k) {                                                         \
      _Pragma("GCC unroll 4") for (int j = 0; j < NV * L16; ++j) b[j] = ld(B + k * ldb + VW * j); \
      _Pragma("GCC unroll 8") for (int i = 0; i < MR; ++i) {                               \
        vf a = bc(ar[i][k * ak]);                                                         \
        _Pragma("GCC unroll 4") for (int j = 0; j < NV * L16; ++j) c[i][j] += a * b[j];          \
      }                                                                                    \
    }                                                                                      \
    _Pragma("GCC unroll 8") for (int i = 0; i < MR; ++i)                                   \
      _Pragma("GCC unroll 4") for (int j = 0; j < NV * L16; ++j)                                 \
        if (i < mr) {                                                                      \
          if (mode == STREAM) st_stream(C + i * ldc + VW * j, c[i][j]);                    \
          else st(C + i * ldc + VW * j, c[i][j]);                                          \
        }                                                                                  \
  }
TILE(4)
TILE(3)
TILE(2)
TILE(1)

/* C (M x N, ldc) = (ACCUM ? C : init rows) + A (M x K, strides as, ak) B (K x N, ldb); N a multiple
   of 16. A channels-first frame is A with as = 1: no transposed copy. */
void gemm(long M, long N, long K, const float* A, long as, long ak, const float* B,
                 long ldb, float* C, long ldc, int mode, const float* init) {
#ifdef __AVX512F__
  if (mode == STREAM && (((unsigned long)C | (unsigned long)(ldc * 4)) & 63)) mode = FRESH;
#else
  if (mode == STREAM) mode = FRESH;
#endif
  for (long n0 = 0; n0 < N; n0 += 16 * NVMAX) {
    long nv = lmin(NVMAX, (N - n0) / 16), m = 0;
    const float* b = B + n0;
    const float* i0 = init ? init + n0 : NULL;
    for (; m < M; m += MR) {
      const float* a = A + m * as;
      float* c = C + m * ldc + n0;
      long mr = lmin(MR, M - m);
      if (nv == 4) tile4(K, a, as, ak, b, ldb, c, ldc, mr, mode, i0);
      else if (nv == 3) tile3(K, a, as, ak, b, ldb, c, ldc, mr, mode, i0);
      else if (nv == 2) tile2(K, a, as, ak, b, ldb, c, ldc, mr, mode, i0);
      else tile1(K, a, as, ak, b, ldb, c, ldc, mr, mode, i0);
    }
  }
}

#if defined(__has_builtin)
#if __has_builtin(__builtin_shufflevector)
#define HAVE_SHUFFLE 1
#endif
#endif


/* One stage of a register transpose: rows i and i + h (bit h of i clear) swap bit h of their
   row and column indices (lo / hi: the shuffle's two index lists). */
#define STAGE(h, ...)                                                                  \
  for (int i = 0; i < VW; ++i) {                                                       \
    if (i & h) continue;                                                               \
    vf lo = __builtin_shufflevector(r[i], r[i + h], __VA_ARGS__);                      \
    r[i + h] = __builtin_shufflevector(r[i], r[i + h], HI_##h);                        \
    r[i] = lo;                                                                         \
  }

/* r[t][q] = r[q][t] for q, t < VW: a VW x VW block transposed in registers. */
static inline void transpose_regs(vf* r) {
#if defined(HAVE_SHUFFLE) && VW == 16
#define HI_1 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31
#define HI_2 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31
#define HI_4 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31
#define HI_8 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31
  STAGE(1, 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30)
  STAGE(2, 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29)
  STAGE(4, 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27)
  STAGE(8, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23)
#elif defined(HAVE_SHUFFLE) && VW == 8
#define HI_1 1, 9, 3, 11, 5, 13, 7, 15
#define HI_2 2, 3, 10, 11, 6, 7, 14, 15
#define HI_4 4, 5, 6, 7, 12, 13, 14, 15
  STAGE(1, 0, 8, 2, 10, 4, 12, 6, 14)
  STAGE(2, 0, 1, 8, 9, 4, 5, 12, 13)
  STAGE(4, 0, 1, 2, 3, 8, 9, 10, 11)
#elif defined(HAVE_SHUFFLE) && VW == 4
#define HI_1 1, 5, 3, 7
#define HI_2 2, 3, 6, 7
  STAGE(1, 0, 4, 2, 6)
  STAGE(2, 0, 1, 4, 5)
#else
  float m[VW][VW];
  for (int q = 0; q < VW; ++q) st(m[q], r[q]);
  for (int t = 0; t < VW; ++t)
    for (int q = 0; q < VW; ++q) r[t][q] = m[q][t];
#endif
}

/* dst[t ds + q] = src[q ss + t] for q < VW, t < nt: a VW x VW block transposed (rows of dst
   past nt not written); `stream`: dst rows are 64-byte aligned final output (st_stream). */
static void transpose_block(float* dst, long ds, const float* src, long ss, long nt,
                            int stream) {
  vf r[VW];
  for (int i = 0; i < VW; ++i) r[i] = ld(src + i * ss);
  transpose_regs(r);
  for (long t = 0; t < nt; ++t)
    if (stream) st_stream(dst + t * ds, r[t]);
    else st(dst + t * ds, r[t]);
}

/* A channels-first output frame straight from the last GEMM: dst[t oc + q] = init[q, t] +
   sum_k A[q as + k] B[k ldb + t] for q < M, t < T (both multiples of 16); init: the rows of
   acc (ldc) when acc is not NULL, else the bias (or zeros). VW positions x VW channels per
   register tile (VW accumulators: 16 of AVX-512's 32 registers, 8 of AVX2's 16), transposed
   in registers and stored (non-temporal when aligned): no frame buffer written and read
   back. */
void gemm_cf_out(long M, long T, long K, const float* A, long as, const float* B, long ldb,
                 const float* acc, long ldc, const float* bias, float* dst, long oc) {
  int stream = !(((unsigned long)dst | (unsigned long)(oc * 4)) & 63);
  for (long q0 = 0; q0 < M; q0 += VW)
    for (long t0 = 0; t0 < T; t0 += VW) {
      vf c[VW];
      const float* a = A + q0 * as;
      for (int i = 0; i < VW; ++i)
        c[i] = acc ? ld(acc + (q0 + i) * ldc + t0) : bias ? ld(bias + t0) : bc(0.f);
      for (long k = 0; k < K; ++k) {
        vf b = ld(B + k * ldb + t0);
        for (int i = 0; i < VW; ++i) c[i] += bc(a[i * as + k]) * b;
      }
      transpose_regs(c);
      for (int t = 0; t < VW; ++t)
        if (stream) st_stream(dst + (t0 + t) * oc + q0, c[t]);
        else st(dst + (t0 + t) * oc + q0, c[t]);
    }
}

/* Whether gemm_cf_out can write a frame of `count` positions and C channels (padded to Cp in
   the GEMM) of a tensor with channel stride cs and position stride ps: channels-first,
   positions and channels whole vectors. */
int cf_writable(long cs, long ps, long count, long C, long Cp) {
  return ps == 1 && cs != 1 && count % 16 == 0 && C == Cp;
}

/* dst[c oc + q op] = acc[q ldc + c] for q < count, c < C: rows of an accumulator stored in a
   tensor of either layout (channels-first in VW x VW transposed blocks, written with
   non-temporal stores when aligned: dst is final output, never read back here). */
void store_rows(float* dst, long oc, long op, const float* acc, long ldc, long count,
                       long C) {
  if (oc == 1) {
    for (long q = 0; q < count; ++q) memcpy(dst + q * op, acc + q * ldc, C * sizeof(float));
    return;
  }
  long whole = op == 1 ? count / VW * VW : 0;
  int stream = !(((unsigned long)dst | (unsigned long)(oc * 4)) & 63);
  for (long q0 = 0; q0 < whole; q0 += VW)
    for (long c0 = 0; c0 < C; c0 += VW)
      transpose_block(dst + c0 * oc + q0, oc, acc + q0 * ldc + c0, ldc, lmin(VW, C - c0), stream);
  for (long q = whole; q < count; ++q) /* the rest, and other layouts */
    for (long c = 0; c < C; ++c) dst[c * oc + q * op] = acc[q * ldc + c];
}

/* Copies the C rows of a channels-first frame at `base` (channel stride xc) to `pack` (rows
   of packed_ld(count)); a channels-last frame (position stride xp != 1) is left as it is, and
   so is every frame when pack is NULL. Packing pays when the frame is read once per rank
   block and there are several (rank 288 channels-first, 2 threads, interleaved A/B runs:
   fwd+bwd 125-133 -> 122-128 ms); with one block the copy costs more than it saves (rank 64:
   29.0 -> 30.1-30.6 ms). */
void pack_frame(const float* base, long xc, long xp, long C, long count, float* pack) {
  if (xp != 1 || !pack) return;
  long ld = packed_ld(count);
  for (long c = 0; c < C; ++c) memcpy(pack + c * ld, base + c * xc, count * sizeof(float));
}

