/* Fused forward of a stride-1 CP convolution.

   out[n, :, od] = U^T (sum_a fd[a] g[od + a dd - pd]) + bias, with g[f] = H(W(V^T x[n, :, f]))
   the rank-space frame f after the 1x1 conv and the W and H passes of the separable kernel.
   Each thread walks its samples (or a range of output frames of one sample) frame by frame,
   keeping the last `span` frames g[f] in a ring; per output frame, per block of RB ranks:
   the new input frames' 1x1 conv (GEMM, K = C) and W / H passes into the ring, then the D pass
   into the block's columns of h2 (the frame, all ranks); then the output frame in one GEMM
   (K = R, starting from the bias): written into the output itself (channels-last, T a
   multiple of 16), into a channels-first output through register transposes (gemm_cf_out),
   or into a frame buffer stored afterwards (store_frame). Every rank-space
   intermediate stays in L2 / L3: only x is read and out written, once. A 2-D conv runs as a
   3-D one whose frames are its rows (native.py). */
#include "hoconv_native.h"

/* Whether output frames are (Ho Wo, T) row-major with whole vectors (GEMMs write them). */
static int direct_out(const Fwd* p) { return p->oc == 1 && p->op == p->T && p->T == p->Tp; }

/* Where output frame od of sample n is accumulated: the output itself when direct_out, else
   `buffer` (stored by store_frame). */
static float* frame_acc(const Fwd* p, long n, long od, float* buffer) {
  return direct_out(p) ? p->out + n * p->on + od * p->Ho * p->Wo * p->op : buffer;
}

/* The accumulator into output frame od of sample n when it is not the output itself. */
static void store_frame(const Fwd* p, long n, long od, const float* acc) {
  long frame = p->Ho * p->Wo;
  if (!direct_out(p))
    store_rows(p->out + n * p->on + od * frame * p->op, p->oc, p->op, acc, p->Tp, frame, p->T);
}

/* g (Ho, Wo, cs) = H(W(h1)) for ranks [r0, r0 + cs) of one frame (h1: (H, W, cs)), row by
   row: each output row from the W-passed rows it reads, kept in `rows` (a ring of min(span,
   H) rows of (Wo, cs)). */
void wh_passes(const Fwd* p, float* g, const float* h1, float* rows, long r0, long cs) {
  long R = p->R, nv = cs / 16, row = p->Wo * cs, span = (p->KH - 1) * p->dh + 1;
  long slots = lmin(span, p->H), next = 0; /* rows below `next` are W-passed */
  const float* sp[MAXK];
  const float* wp[MAXK];
  for (long ho = 0; ho < p->Ho; ++ho) {
    long lo = ho - p->ph, hi = lmin(p->H, lo + span), nk = 0;
    for (next = lmax(next, lmax(lo, 0)); next < hi; ++next)
      pass_axis(rows + next % slots * row, cs, h1 + next * p->W * cs, cs, p->Wo, p->W, 1,
                p->fw + r0, R, p->KW, p->dw, p->pw, nv);
    for (long b = 0; b < p->KH; ++b) {
      long i = lo + b * p->dh;
      if (i >= 0 && i < p->H) {
        sp[nk] = rows + i % slots * row;
        wp[nk++] = p->fh + b * R + r0;
      }
    }
    taps(g + ho * row, cs, sp, cs, p->Wo, wp, nk, nv);
  }
}

/* Floats of one thread's hc_cp_fwd workspace: the layout of fwd_range. */
long hc_cp_fwd_ws_floats(const Fwd* p) {
  long hw = p->H * p->W, frame = p->Ho * p->Wo;
  return hw * RB + p->H * p->Wo * RB + span_of(p) * frame * p->R + frame * p->R +
         frame * p->Tp + span_of(p) * p->C * packed_ld(hw);
}

/* Output frames [o0, o1) of sample n; `ws`: the workspace of one thread (cp_fwd_ws_floats). */
static void fwd_range(const Fwd* p, long n, long o0, long o1, float* ws) {
  long span = span_of(p), hw = p->H * p->W, frame = p->Ho * p->Wo, R = p->R;
  float* h1 = ws;                           /* (H W, RB): the 1x1 conv of a block */
  float* tw = h1 + hw * RB;                 /* (H, Wo, RB): after the W pass */
  float* ring = tw + p->H * p->Wo * RB;     /* span frames after the H pass (blk) */
  float* h2 = ring + span * frame * R;      /* (Ho Wo, R): after the D pass */
  float* acc = h2 + frame * R;              /* (Ho Wo, Tp): the output frame */
  float* pack = packing(R, acc + frame * p->Tp); /* span frames (C, packed_ld(H W)), or NULL */
  const float* sp[MAXK];
  const float* wp[MAXK];
  long next = 0; /* input frames below `next` are done */
  /* channels-first frames of whole vectors come straight from the last GEMM (gemm_cf_out) */
  int cf_out = cf_writable(p->oc, p->op, frame, p->T, p->Tp);
  for (long od = o0; od < o1; ++od) {
    float* out = frame_acc(p, n, od, acc);
    long lo = od - p->pd, hi = lmin(p->D, lo + span), first = lmax(next, lmax(lo, 0));
    for (long f = first; f < hi && pack; ++f) /* channels-first frames copied (pack_frame) */
      pack_frame(p->x + n * p->xn + f * hw * p->xp, p->xc, p->xp, p->C, hw,
                 pack + (f % span) * p->C * packed_ld(hw));
    next = lmax(next, hi);
    for (long r0 = 0; r0 < R; r0 += RB) {
      long cs = lmin(RB, R - r0), nv = cs / 16;
      for (long f = first; f < hi; ++f) { /* the new input frames' g, ranks [r0, r0 + cs) */
        Mat xm = frame_view(p->x + n * p->xn + f * hw * p->xp, p->xc, p->xp, hw,
                            pack ? pack + (f % span) * p->C * packed_ld(hw) : NULL);
        gemm(hw, cs, p->C, xm.a, xm.as, xm.ak, p->vt + r0, R, h1, cs, 0, NULL);
        wh_passes(p, blk(ring, f % span, frame, R, r0), h1, tw, r0, cs);
      }
      long nk = 0;
      for (long a = 0; a < p->KD; ++a) {
        long f = od + a * p->dd - p->pd;
        if (f >= 0 && f < p->D) {
          sp[nk] = blk(ring, f % span, frame, R, r0);
          wp[nk++] = p->fd + a * R + r0;
        }
      }
      taps(h2 + r0, R, sp, cs, frame, wp, nk, nv); /* into h2's columns [r0, r0 + cs) */
    }
    /* the output frame: one GEMM over every rank (K = R, accumulators in registers) */
    if (cf_out) {
      gemm_cf_out(frame, p->T, R, h2, R, p->ut, p->Tp, NULL, 0, p->bias,
                  p->out + n * p->on + od * frame, p->oc);
    } else {
      gemm(frame, p->Tp, R, h2, R, 1, p->ut, p->Tp, out, p->Tp, out != acc ? STREAM : FRESH,
           p->bias);
      store_frame(p, n, od, out);
    }
  }
}

/* Why a CP conv's operands are wrong (NULL if they are not); shared with the backward. */
const char* check_fwd(const Fwd* p) {
  if (p->N < 0 || p->C < 1 || p->D < 1 || p->H < 1 || p->W < 1)
    return "N, C, D, H, W must be >= 0, 1, 1, 1, 1";
  if (p->Do < 1 || p->Ho < 1 || p->Wo < 1) return "Do, Ho, Wo must be >= 1";
  if (p->R < 16 || p->R % 16) return "R must be a positive multiple of 16";
  if (p->T < 1) return "T must be >= 1";
  if (p->KD < 1 || p->KH < 1 || p->KW < 1 || p->KD > MAXK || p->KH > MAXK || p->KW > MAXK)
    return "KD, KH, KW must be in [1, 16] (MAXK)";
  if (p->dd < 1 || p->dh < 1 || p->dw < 1) return "dilations dd, dh, dw must be >= 1";
  if (p->xc < 1 || p->xp < 1 || p->oc < 1 || p->op < 1) return "strides xc, xp, oc, op must be >= 1";
  if (p->N > 0 && (!p->x || !p->vt || !p->fd || !p->fh || !p->fw))
    return "x, vt, fd, fh, fw must not be NULL";
  return NULL;
}

/* Entry point: `threads` OpenMP threads, each with `ws_len` floats of `ws`. The work is
   N x chunks units (a range of output frames of one sample); chunks makes the units a
   multiple of the threads when N is not. */
const char* hc_cp_fwd(const FwdCall* a) {
  const Fwd* p = &a->p;
  const char* err = check_fwd(p);
  if (err) return err;
  if (p->N > 0 && (!p->ut || !p->out || !a->ws)) return "ut, out, ws must not be NULL";
  if (p->Tp < p->T || p->Tp % 16) return "Tp must be a multiple of 16, >= T";
  if (a->threads < 1) return "threads must be >= 1";
  if (a->ws_len < hc_cp_fwd_ws_floats(p)) return "ws_len must be >= hc_cp_fwd_ws_floats";
  long g = a->threads, m = p->N, threads = a->threads; /* chunks = threads / gcd(N, threads) */
  while (m) { long t = g % m; g = m; m = t; }
  long chunks = lmin(p->Do, threads / g), units = p->N * chunks;
#pragma omp parallel for num_threads(threads) schedule(static, 1)
  for (long i = 0; i < threads; ++i) {
    for (long u = i; u < units; u += threads) {
      long n = u / chunks, c = u % chunks;
      fwd_range(p, n, p->Do * c / chunks, p->Do * (c + 1) / chunks, a->ws + i * a->ws_len);
    }
    stream_fence(); /* the STREAM stores are visible before the call returns */
  }
  return NULL;
}
