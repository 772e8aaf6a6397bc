/* Fused backward of a stride-1 CP convolution.

   Forward, per sample: h1[f] = x[f] V^T, u[f] = W(h1[f]), g[f] = H(u[f]) (the W and H passes
   of the separable kernel), h2[o] = sum_a fd[a] g[o + a dd - pd], out[o] = h2[o] U^T + bias.
   Given G = d out, one walk over the input frames f, per block of RB ranks:
     gh2[o] = G[o] U for the output frames o up to f + pd (a ring: the first ones to read f)
     h1 = x[f] V^T, g[f] = H(W(h1)) (a ring: span frames)
     s = sum_a fd[a] gh2[f - a dd + pd]           (the D pass transposed: all of f's outputs)
     t = H^T(s), gh1 = W^T(t)                       (the flipped passes, row by row)
     dfh[b] += <s, u shifted by b>, dfw[c] += <t, h1 shifted by c>
     dV += gh1^T x[f]                               dx[f] = gh1 V (complete: stored now)
   and, for each output frame o whose input frames are all done (o + (KD - 1) dd - pd <= f):
     h2[o] with dfd[a] += <gh2[o], g[o + a dd - pd]>, dU += G[o]^T h2[o].
   h1 and dx[f] are consumed in the step that makes them: only g and gh2 need rings. x and G
   are read once each (x twice), dx written once. The threads take whole samples, or ranges
   of a sample's output frames when there are fewer samples than threads (the span - 1 input
   frames two ranges share get their gradient in two parts, summed at the end); each thread
   accumulates its own parameter grads (summed in native.py). */
#include "hoconv_native.h"

/* Per-thread gradient accumulators, in this order in `grads`. */
typedef struct {
  float *du, *dv, *dfd, *dfh, *dfw; /* (T, R), (C, R), (KD, R), (KH, R), (KW, R) */
  float* db;                        /* (T): the bias gradient */
} Grads;

typedef struct {
  float *g, *gh2;          /* rings (blk): span frames of Ho Wo positions */
  float *h1, *tw, *h2, *s; /* blocks: (H W, RB), (H, Wo, RB), (Ho Wo, RB) x 2 */
  float *t, *gh1, *dx;     /* (Wo, RB): one row, (H W, RB), (H W, Cp): dx[f] being summed */
  float *xpack, *gpack;    /* packed frames (pack_frame; NULL: none): x[f], span of G */
} Work;

/* Input frame f of sample n as a GEMM operand (packed by bwd_range when channels-first). */
static inline Mat x_view(const Bwd* b, const Work* w, long n, long f) {
  const Fwd* p = &b->f;
  long hw = p->H * p->W;
  return frame_view(p->x + n * p->xn + f * hw * p->xp, p->xc, p->xp, hw, w->xpack);
}

/* Output frame od of sample n as the A operand of gh2 = G U (packed when channels-first). */
static inline Mat g_view(const Bwd* b, const Work* w, long n, long od) {
  const Fwd* p = &b->f;
  long frame = p->Ho * p->Wo, span = span_of(p);
  float* pack = w->gpack ? w->gpack + (od % span) * p->T * packed_ld(frame) : NULL;
  return frame_view(b->gy + n * p->on + od * frame * p->op, p->oc, p->op, frame, pack);
}

/* Input frame f of sample n, ranks [r0, r0 + cs): h1 (a block) and g[f] into its ring. */
static void bwd_forward(const Bwd* b, const Work* w, long n, long f, long r0, long cs) {
  const Fwd* p = &b->f;
  long span = span_of(p), hw = p->H * p->W, frame = p->Ho * p->Wo, R = p->R;
  Mat xm = x_view(b, w, n, f);
  gemm(hw, cs, p->C, xm.a, xm.as, xm.ak, p->vt + r0, R, w->h1, cs, 0, NULL);
  wh_passes(p, blk(w->g, f % span, frame, R, r0), w->h1, w->tw, r0, cs);
}

/* gh2[od] = G[od] U for ranks [r0, r0 + cs), into its ring. */
static void bwd_gh2(const Bwd* b, const Work* w, long n, long od, long r0, long cs) {
  const Fwd* p = &b->f;
  long span = span_of(p), frame = p->Ho * p->Wo, R = p->R;
  Mat g = g_view(b, w, n, od);
  gemm(frame, cs, p->T, g.a, g.as, g.ak, b->um + r0, R, blk(w->gh2, od % span, frame, R, r0), cs,
       0, NULL);
}

/* Output frame od (every input frame it reads done), ranks [r0, r0 + cs): h2 with dfd, and
   dU += G[od]^T h2 (G read in place: its rows are the GEMM's A rows, positions contiguous). */
static void bwd_output(const Bwd* b, const Work* w, const Grads* d, long n, long od, long r0,
                       long cs) {
  const Fwd* p = &b->f;
  long span = span_of(p), frame = p->Ho * p->Wo, R = p->R, nv = cs / 16;
  const float* sp[MAXK];
  const float* wp[MAXK];
  float* dp[MAXK];
  long nk = 0;
  for (long a = 0; a < p->KD; ++a) {
    long f = od + a * p->dd - p->pd;
    if (f >= 0 && f < p->D) {
      sp[nk] = blk(w->g, f % span, frame, R, r0);
      dp[nk] = d->dfd + a * R + r0;
      wp[nk++] = p->fd + a * R + r0;
    }
  }
  if (nk == 0) return; /* reads padding only: no gradient */
  const float* gh2 = blk(w->gh2, od % span, frame, R, r0);
  if (nk == 3) { /* h2 and dfd in one pass over the three frames */
    taps3_dot(w->h2, gh2, sp, wp, dp, frame, cs, nv);
  } else {
    taps(w->h2, cs, sp, cs, frame, wp, nk, nv);
    for (long i = 0; i < nk; ++i) dot_acc(dp[i], gh2, cs, sp[i], cs, frame, nv);
  }
  const float* g = b->gy + n * p->on + od * frame * p->op;
  gemm(p->T, cs, frame, g, p->oc, p->op, w->h2, cs, d->du + r0, R, 1, NULL);
}


/* Input frame f (h1 just made; the gh2 of every output frame in [o0, o1) that reads it in
   the ring), ranks [r0, r0 + cs): back to the input, from those output frames only. After
   the D pass transposed (s, a frame), row by row in L1: u = W(h1) again, t = H^T(s) with
   dfh, then gh1 = W^T(t) with dfw. */
static void bwd_input(const Bwd* b, const Work* w, const Grads* d, long n, long f, long o0,
                      long o1, long r0, long cs, int direct) {
  const Fwd* p = &b->f;
  long span = span_of(p), hw = p->H * p->W, frame = p->Ho * p->Wo, R = p->R;
  long nv = cs / 16, nk = 0;
  const float* sp[MAXK];
  const float* wp[MAXK];
  float* dp[MAXK];
  for (long a = 0; a < p->KD; ++a) {
    long od = f - a * p->dd + p->pd;
    if (od >= o0 && od < o1) {
      sp[nk] = blk(w->gh2, od % span, frame, R, r0);
      wp[nk++] = p->fd + a * R + r0;
    }
  }
  taps(w->s, cs, sp, cs, frame, wp, nk, nv);
  const float* h1 = w->h1;
  /* the flipped H and W taps (weight stride -R) and their gradients */
  const float* fh = p->fh + (p->KH - 1) * R + r0;
  const float* fw = p->fw + (p->KW - 1) * R + r0;
  float* dfh = d->dfh + (p->KH - 1) * R + r0;
  float* dfw = d->dfw + (p->KW - 1) * R + r0;
  long padh = p->dh * (p->KH - 1) - p->ph, padw = p->dw * (p->KW - 1) - p->pw;
  for (long h = 0; h < p->H; ++h) {
    const float* h1r = h1 + h * p->W * cs;
    pass_axis(w->tw, cs, h1r, cs, p->Wo, p->W, 1, p->fw + r0, R, p->KW, p->dw, p->pw, nv);
    nk = taps_at(h, p->Ho, p->KH, p->dh, padh, w->s, p->Wo * cs, fh, dfh, -R, sp, wp, dp);
    taps_dot(w->t, w->tw, sp, wp, dp, nk, p->Wo, cs, nv);
    pass_dot(w->gh1 + h * p->W * cs, w->t, h1r, p->W, p->Wo, fw, dfw, -R, p->KW, p->dw, padw,
             cs, nv);
  }
  Mat xm = x_view(b, w, n, f);
  gemm(p->C, cs, hw, xm.a, xm.ak, xm.as, w->gh1, cs, d->dv + r0, R, 1, NULL);
  float* acc = w->dx;
  if (direct && r0 + cs == R) /* the last block writes the channels-first frame of dx */
    gemm_cf_out(hw, p->C, cs, w->gh1, cs, b->vp + r0 * b->Cp, b->Cp, r0 > 0 ? acc : NULL, b->Cp,
                NULL, b->dx + n * p->xn + f * hw, p->xc);
  else
    gemm(hw, b->Cp, cs, w->gh1, cs, 1, b->vp + r0 * b->Cp, b->Cp, acc, b->Cp, r0 > 0, NULL);
}

/* dst[c oc + q op] += acc[q ldc + c] for q < count, c < C (a partial input gradient). */
static void add_rows(float* dst, long oc, long op, const float* acc, long ldc, long count,
                     long C) {
  for (long q = 0; q < count; ++q)
    for (long c = 0; c < C; ++c) dst[c * oc + q * op] += acc[q * ldc + c];
}

/* db[t] += sum_q g[t oc + q op], t < T, q < count: the bias gradient of one output frame. */
static void bias_grad(float* restrict db, const float* restrict g, long oc, long op, long T,
                      long count) {
  if (oc == 1) { /* channels-last: whole rows of T */
    for (long q = 0; q < count; ++q)
      for (long t = 0; t < T; ++t) db[t] += g[q * op + t];
    return;
  }
  for (long t = 0; t < T; ++t) {
    const float* row = g + t * oc;
    vf acc = bc(0.f);
    long q = 0;
    for (; op == 1 && q + VW <= count; q += VW) acc += ld(row + q);
    float sum = hsum(acc);
    for (; q < count; ++q) sum += row[q * op];
    db[t] += sum;
  }
}

/* Output frames [o0, o1) of sample n: one unit of work, a walk over the input frames they
   read. The input frames it shares with the previous unit (the first span - 1 it reads, when
   o0 > 0) get only part of their gradient here: their dx goes to `side` ((span - 1) frames of
   (H W, Cp)), added to dx once every unit is done; every other frame's dx is stored. */
static void bwd_range(const Bwd* b, const Work* w, const Grads* d, long n, long o0, long o1,
                      float* side) {
  const Fwd* p = &b->f;
  long span = span_of(p), hw = p->H * p->W, R = p->R, frame = p->Ho * p->Wo;
  long start = lmax(0, o0 - p->pd), end = lmin(p->D, o1 - 1 - p->pd + span);
  long shared = o0 > 0 ? o0 - p->pd + span - 1 : start;
  long next_gh2 = o0, next_out = o0; /* output frames below: gh2 made, finished */
  long next_db = o0;                  /* output frames below: in the bias gradient */
  /* channels-first dx frames of whole vectors: from the last block's GEMM (gemm_cf_out) */
  int cf_dx = cf_writable(p->xc, p->xp, hw, p->C, b->Cp);
  for (long f = start; f < end; ++f) {
    /* gh2 of the output frames up to f + pd (earlier ones that read no input frame skipped);
       the output frames whose input frames are all done by f */
    long g_lo = lmax(next_gh2, f + p->pd - span + 1), g_hi = lmin(o1, f + p->pd + 1);
    long out_hi = f + 1 == end ? o1 : lmin(o1, f + p->pd - span + 2);
    int direct = cf_dx && f >= shared;
    pack_frame(p->x + n * p->xn + f * hw * p->xp, p->xc, p->xp, p->C, hw, w->xpack);
    for (; next_db < g_hi; ++next_db) /* G[od] read here just before its gh2 GEMMs */
      bias_grad(d->db, b->gy + n * p->on + next_db * frame * p->op, p->oc, p->op, p->T, frame);
    for (long od = g_lo; od < g_hi && w->gpack; ++od)
      pack_frame(b->gy + n * p->on + od * frame * p->op, p->oc, p->op, p->T, frame,
                 w->gpack + (od % span) * p->T * packed_ld(frame));
    for (long r0 = 0, cs; r0 < R; r0 += cs) {
      cs = lmin(RB, R - r0);
      for (long od = g_lo; od < g_hi; ++od) bwd_gh2(b, w, n, od, r0, cs);
      bwd_forward(b, w, n, f, r0, cs);
      bwd_input(b, w, d, n, f, o0, o1, r0, cs, direct);
      for (long od = next_out; od < out_hi; ++od) bwd_output(b, w, d, n, od, r0, cs);
    }
    next_gh2 = lmax(next_gh2, g_hi);
    next_out = lmax(next_out, out_hi);
    if (direct) continue; /* written by bwd_input */
    if (f < shared)
      memcpy(side + (f - start) * hw * b->Cp, w->dx, hw * b->Cp * sizeof(float));
    else
      store_rows(b->dx + n * p->xn + f * hw * p->xp, p->xc, p->xp, w->dx, b->Cp, hw, p->C);
  }
  for (; next_db < o1; ++next_db) /* output frames after the last input frame */
    bias_grad(d->db, b->gy + n * p->on + next_db * frame * p->op, p->oc, p->op, p->T, frame);
}

/* Floats of one thread's hc_cp_bwd workspace: the layout of Work (work_at). */
long hc_cp_bwd_ws_floats(const Bwd* b) {
  const Fwd* p = &b->f;
  long hw = p->H * p->W, frame = p->Ho * p->Wo, span = span_of(p);
  return 2 * span * frame * p->R + (2 * hw + p->H * p->Wo + p->Wo + 2 * frame) * RB +
         hw * b->Cp + p->C * packed_ld(hw) + span * p->T * packed_ld(frame);
}

/* Thread i's Work in ws (the layout hc_cp_bwd_ws_floats counts). */
static Work work_at(const Bwd* b, float* q) {
  const Fwd* p = &b->f;
  long span = span_of(p), hw = p->H * p->W, frame = p->Ho * p->Wo, R = p->R;
  Work w;
  w.g = q; q += span * frame * R;
  w.gh2 = q; q += span * frame * R;
  w.h1 = q; q += hw * RB;
  w.tw = q; q += p->H * p->Wo * RB;
  w.h2 = q; q += frame * RB;
  w.s = q; q += frame * RB;
  w.t = q; q += p->Wo * RB;
  w.gh1 = q; q += hw * RB;
  w.dx = q; q += hw * b->Cp;
  w.xpack = packing(R, q); q += p->C * packed_ld(hw);
  w.gpack = packing(R, q);
  return w;
}

/* Thread i's Grads in its grads_len floats at a (the layout of BwdCall's grads). */
static Grads grads_at(const Fwd* p, float* a) {
  long R = p->R, T = p->T, C = p->C, KD = p->KD, KH = p->KH, KW = p->KW;
  Grads d = {a, a + T * R, a + (T + C) * R, a + (T + C + KD) * R, a + (T + C + KD + KH) * R,
             a + (T + C + KD + KH + KW) * R};
  return d;
}

/* The frames two units shared: the later unit's part (in side) added to the stored one. */
static void add_shared(const BwdCall* a, long side_len) {
  const Fwd* p = &a->b.f;
  long span = span_of(p), hw = p->H * p->W, chunks = a->chunks;
#pragma omp parallel for num_threads(a->threads) schedule(static, 1)
  for (long u = 0; u < p->N * chunks; ++u) {
    long n = u / chunks, o0 = p->Do * (u % chunks) / chunks;
    if (o0 == 0) continue;
    long start = lmax(0, o0 - p->pd), shared = lmin(p->D, o0 - p->pd + span - 1);
    for (long f = start; f < shared; ++f)
      add_rows(a->b.dx + n * p->xn + f * hw * p->xp, p->xc, p->xp,
               a->side + u * side_len + (f - start) * hw * a->b.Cp, a->b.Cp, hw, p->C);
  }
}

/* Entry point: the work is N x chunks units (a range of at least `span` output frames of one
   sample: chunks > 1 when there are fewer samples than threads), taken by `threads` OpenMP
   threads (the layouts of ws, grads and side: BwdCall). */
const char* hc_cp_bwd(const BwdCall* a) {
  const Bwd* b = &a->b;
  const Fwd* p = &b->f;
  const char* err = check_fwd(p);
  if (err) return err;
  if (p->N > 0 && (!b->gy || !b->um || !b->vp || !b->dx || !a->ws || !a->grads || !a->side))
    return "gy, um, vp, dx, ws, grads, side must not be NULL";
  if (p->Tp != p->T) return "Tp must equal T in the backward";
  if (b->Cp < p->C || b->Cp % 16) return "Cp must be a multiple of 16, >= C";
  if (a->threads < 1 || a->chunks < 1) return "threads and chunks must be >= 1";
  if (a->ws_len < hc_cp_bwd_ws_floats(b)) return "ws_len must be >= hc_cp_bwd_ws_floats";
  if (a->grads_len < (p->T + p->C + p->KD + p->KH + p->KW) * p->R + p->T)
    return "grads_len must be >= (T + C + KD + KH + KW) R + T";
  long side_len = (span_of(p) - 1) * p->H * p->W * b->Cp, units = p->N * a->chunks;
#pragma omp parallel for num_threads(a->threads) schedule(static, 1)
  for (long i = 0; i < a->threads; ++i) {
    Work w = work_at(b, a->ws + i * a->ws_len);
    Grads d = grads_at(p, a->grads + i * a->grads_len);
    for (long u = i; u < units; u += a->threads) {
      long n = u / a->chunks, c = u % a->chunks;
      bwd_range(b, &w, &d, n, p->Do * c / a->chunks, p->Do * (c + 1) / a->chunks,
                a->side + u * side_len);
    }
    stream_fence(); /* store_rows' non-temporal stores are visible before the sums below */
  }
  add_shared(a, side_len);
  return NULL;
}
