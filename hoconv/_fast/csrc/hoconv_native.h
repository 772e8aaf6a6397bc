/* hoconv's native CPU kernels: shared types, inline helpers and the helpers each unit exports
   to the others (built and loaded by hoconv/_fast/native_build.py; called by native.py).

   Units: depthwise.c (separable depthwise conv, its kernel gradient, the 1-D tap passes),
   gemm.c (register-tiled GEMMs, transposed stores, frame packing), fused_fwd.c and
   fused_bwd.c (a whole stride-1 CP conv per sample, each way; fused_wgrad.c the backward's
   weight-gradient pieces), abi.c (struct sizes).

   Tensors are float32; vectors are GCC vector extensions of one register (vf, below).
   Every entry point takes one struct (mirrored by ctypes.Structure in native_abi.py; abi.c
   reports the sizes, checked at load) and returns NULL, or a message naming the field that
   is wrong. */
#ifndef HOCONV_NATIVE_H
#define HOCONV_NATIVE_H
#include <string.h>

#define HC_ABI_VERSION 2
#define HC_INTERNAL __attribute__((visibility("hidden")))
#define MAXK 16 /* taps per axis */
#define RB 64   /* ranks per block of the fused passes */

/* vf: one vector register of VW floats (AVX-512 16, AVX / AVX2 8, SSE 4). Channel counts
   handed to the kernels are multiples of 16, i.e. of L16 = 16 / VW registers. A kernel
   written for 16-float vectors on a narrower ISA (GCC's generic vectors) keeps every vector
   on the stack: the AVX2 build of such kernels ran 3-3.5x slower than the eager ones. */
#if defined(__AVX512F__)
#define VW 16
#elif defined(__AVX__)
#define VW 8
#else
#define VW 4
#endif
#define L16 (16 / VW)
typedef float vf __attribute__((vector_size(4 * VW)));
static inline vf ld(const float* p) { vf v; memcpy(&v, p, sizeof v); return v; }
static inline void st(float* p, vf v) { memcpy(p, &v, sizeof v); }
static inline long lmax(long a, long b) { return a > b ? a : b; }
static inline long lmin(long a, long b) { return a < b ? a : b; }
static inline vf bc(float s) { /* an initializer: GCC emits one vbroadcastss (s + 0 adds) */
#if VW == 16
  return (vf){s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s};
#elif VW == 8
  return (vf){s, s, s, s, s, s, s, s};
#else
  return (vf){s, s, s, s};
#endif
}
/* the sum of a vector's lanes */
static inline float hsum(vf v) {
  float s = 0.f;
  for (int i = 0; i < VW; ++i) s += v[i];
  return s;
}

/* ---- entry-point structs (keep in step with native_abi.py) ---- */

/* A stride-1 depthwise conv with a separable kernel: x (N, D, H, W, R) -> out (N, Do, Ho, Wo,
   R), both channels-last; factors transposed (KD, R), (KH, R), (KW, R); out[o] reads
   x[o + k dil - pad] per axis; `scratch_len` floats of scratch per thread. */
typedef struct {
  const float *x, *fd, *fh, *fw;
  float *out, *scratch;
  long scratch_len, threads, N, D, H, W, Do, Ho, Wo, R, KD, KH, KW, pd, ph, pw, dd, dh, dw;
} DwSep;

/* acc (KD, KH, KW, R) += the kernel gradient of a stride-1 depthwise conv (27 taps for
   3x3x3): gy (N, Do, Ho, Wo, R) the output gradient, h (N, D, H, W, R) the input. */
typedef struct {
  const float *gy, *h;
  float* acc;
  long threads, N, D, H, W, Do, Ho, Wo, R, KD, KH, KW, pd, ph, pw, dd, dh, dw;
} DwWgrad;

/* A stride-1 3-D CP conv: x, V^T (C, R), fd (KD, R), fh, fw, U^T (R, Tp) zero-padded to Tp
   columns (a multiple of 16), bias (Tp) or NULL, out; geometry; strides of sample, channel
   and flattened position of x (xn, xc, xp) and of out (on, oc, op). */
typedef struct {
  const float *x, *vt, *fd, *fh, *fw, *ut, *bias;
  float* out;
  long N, C, D, H, W, Do, Ho, Wo, R, T, Tp, KD, KH, KW, pd, ph, pw, dd, dh, dw;
  long xn, xc, xp, on, oc, op;
} Fwd;

/* cp_fwd: `threads` OpenMP threads, each with ws_len floats of ws (hc_cp_fwd_ws_floats). */
typedef struct {
  Fwd p;
  float* ws;
  long ws_len, threads;
} FwdCall;

/* The backward's operands: f as the forward's (ut, bias, out unused; Tp = T), G the output
   gradient (strides on, oc, op of f), U (T, R), V (R, Cp) zero-padded to Cp columns, dx
   (strides of x). */
typedef struct {
  Fwd f;
  const float *gy, *um, *vp;
  float* dx;
  long Cp;
} Bwd;

/* cp_bwd: N x chunks units of work over `threads` threads; per thread ws_len floats of ws
   (hc_cp_bwd_ws_floats) and grads_len zeroed floats of grads ((T + C + KD + KH + KW) R + T:
   dU, dV, dfd, dfh, dfw, d bias); per unit (span - 1) H W Cp floats of side. */
typedef struct {
  Bwd b;
  float *ws, *grads, *side;
  long ws_len, grads_len, threads, chunks;
} BwdCall;

/* ---- helpers shared between units ---- */

/* A frame's matrix: element (position q, channel c) at a[q as + c ak]. */
typedef struct {
  const float* a;
  long as, ak;
} Mat;

/* How a GEMM treats C: start from init (FRESH), add to it (ACCUM), or start from init and
   write with non-temporal stores (STREAM: final output never read back; 64-byte aligned
   rows, AVX-512 only, else FRESH). */
enum { FRESH = 0, ACCUM = 1, STREAM = 2 };

/* Block r0 of ring slot i: rings are (span, R / RB, size, RB), each block of a frame
   contiguous (size positions of min(RB, R - r0) ranks). */
static inline float* blk(float* ring, long i, long size, long R, long r0) {
  return ring + (i * R + r0) * size;
}

/* Row stride of a packed channels-first frame of `count` positions: whole vectors plus one,
   so that rows do not alias in the caches (rows 2^k floats apart share their cache sets). */
static inline long packed_ld(long count) { return (count + 15) / 16 * 16 + 16; }

/* The frame at `base` as a GEMM operand: its pack_frame copy, if any, else itself. */
static inline Mat frame_view(const float* base, long xc, long xp, long count, const float* pack) {
  return xp != 1 || !pack ? (Mat){base, xp, xc} : (Mat){pack, 1, packed_ld(count)};
}

/* The packing buffer to use (NULL: do not pack) for a layer of R ranks. */
static inline float* packing(long R, float* buffer) { return R > RB ? buffer : NULL; }

/* Input frames one output frame reads along the first axis (the rings' length). */
static inline long span_of(const Fwd* p) { return (p->KD - 1) * p->dd + 1; }

/* depthwise.c */
HC_INTERNAL void taps(float* d, long ds, const float* const* s, long ss, long count,
                      const float* const* w, long nk, long nv);
HC_INTERNAL void pass_axis(float* d, long ds, const float* s, long ss, long Lo, long L,
                           long inner, const float* wt, long R, long K, long dil, long pad,
                           long nv);
/* gemm.c */
HC_INTERNAL void gemm(long M, long N, long K, const float* A, long as, long ak, const float* B,
                      long ldb, float* C, long ldc, int mode, const float* init);
HC_INTERNAL int cf_writable(long cs, long ps, long count, long C, long Cp);
HC_INTERNAL void gemm_cf_out(long M, long T, long K, const float* A, long as, const float* B,
                             long ldb, const float* acc, long ldc, const float* bias,
                             float* dst, long oc);
HC_INTERNAL void store_rows(float* dst, long oc, long op, const float* acc, long ldc,
                            long count, long C);
HC_INTERNAL void pack_frame(const float* base, long xc, long xp, long C, long count,
                            float* pack);
HC_INTERNAL void stream_fence(void);
/* fused_fwd.c */
HC_INTERNAL void wh_passes(const Fwd* p, float* g, const float* h1, float* rows, long r0,
                           long cs);
HC_INTERNAL const char* check_fwd(const Fwd* p);

/* fused_wgrad.c */
HC_INTERNAL void dot_acc(float* ac, const float* a, long as, const float* b, long bs, long count,
                         long nv);
HC_INTERNAL void taps3_dot(float* h, const float* gh, const float* const* s,
                           const float* const* w, float* const* dw, long count, long cs, long nv);
HC_INTERNAL void taps_dot(float* d, const float* gh, const float* const* s, const float* const* w,
                          float* const* dw, long nk, long count, long cs, long nv);
HC_INTERNAL long taps_at(long o, long L, long K, long dil, long pad, const float* s, long step,
                         const float* wt, float* dwt, long ws, const float** sp,
                         const float** wp, float** dp);
HC_INTERNAL void pass_dot(float* d, const float* s, const float* gh, long Lo, long L,
                          const float* wt, float* dwt, long ws, long K, long dil, long pad,
                          long cs, long nv);

/* ---- entry points ---- */
const char* hc_dw_sep(const DwSep* a);
const char* hc_dw_wgrad(const DwWgrad* a);
long hc_cp_fwd_ws_floats(const Fwd* p);
const char* hc_cp_fwd(const FwdCall* a);
long hc_cp_bwd_ws_floats(const Bwd* b);
const char* hc_cp_bwd(const BwdCall* a);
long hc_abi_version(void);
long hc_struct_size(long which); /* 0 DwSep, 1 DwWgrad, 2 Fwd, 3 FwdCall, 4 Bwd, 5 BwdCall */
#endif
