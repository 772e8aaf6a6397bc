// Inline SVG plots of hoconv serve: V/A curves over time per face track, and the circumplex.
// Values outside [-1, 1] are drawn on the border and counted in the caption, never hidden.
"use strict";

const HoconvPlots = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
                   "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

  function el(name, attrs, parent, text) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    if (parent) parent.appendChild(node);
    return node;
  }

  function colour(track) {
    return PALETTE[Number(track) % PALETTE.length];
  }

  // Scored rows grouped by face track: {track: [{t, v, a, frame}]}, sorted by time.
  function byTrack(rows) {
    const tracks = {};
    for (const r of rows) {
      if (r.valence === null || r.valence === undefined) continue;
      const t = r.time_s === null || r.time_s === undefined ? r.frame : r.time_s;
      (tracks[r.face] = tracks[r.face] || []).push({ t: t, v: r.valence, a: r.arousal, frame: r.frame });
    }
    for (const k of Object.keys(tracks)) tracks[k].sort((p, q) => p.t - q.t);
    return tracks;
  }

  const clamp = (x) => Math.max(-1, Math.min(1, x));

  // Path "d" of one series; a new "M" after a gap of more than `gap` in time.
  function pathData(points, x, y, key, gap) {
    let d = "";
    let last = null;
    for (const p of points) {
      const cmd = last === null || p.t - last > gap ? "M" : "L";
      d += `${cmd}${x(p.t).toFixed(1)},${y(clamp(p[key])).toFixed(1)} `;
      last = p.t;
    }
    return d.trim();
  }

  function panel(svg, top, height, left, width, label) {
    const y = (v) => top + (1 - (v + 1) / 2) * height;
    el("rect", { x: left, y: top, width: width, height: height, fill: "none", stroke: "#ccc" }, svg);
    for (const v of [-1, -0.5, 0, 0.5, 1]) {
      el("line", { x1: left, x2: left + width, y1: y(v), y2: y(v),
                   stroke: v === 0 ? "#999" : "#eee" }, svg);
      el("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end" }, svg, v.toFixed(1));
    }
    el("text", { x: 14, y: top + height / 2, transform: `rotate(-90 14 ${top + height / 2})`,
                 "text-anchor": "middle" }, svg, label);
    return y;
  }

  // Valence (top panel) and arousal (bottom panel) over time, one colour per track.
  function drawCurves(svg, rows, options) {
    svg.replaceChildren();
    const opts = options || {};
    const tracks = byTrack(rows);
    const keys = Object.keys(tracks);
    const all = keys.flatMap((k) => tracks[k]);
    const W = 900, left = 56, right = 120, ph = 130, width = W - left - right;
    let t0 = Math.min(...all.map((p) => p.t)), t1 = Math.max(...all.map((p) => p.t));
    if (!all.length) { t0 = 0; t1 = 1; }
    if (t1 - t0 < 1e-9) { t0 -= 0.5; t1 += 0.5; }
    const x = (t) => left + ((t - t0) / (t1 - t0)) * width;
    Object.assign(svg.dataset, { t0: t0, t1: t1, left: left, width: width, bottom: 16 + 2 * ph + 30 });
    const yv = panel(svg, 16, ph, left, width, "valence");
    const ya = panel(svg, 16 + ph + 30, ph, left, width, "arousal");
    const axisY = 16 + 2 * ph + 30;
    for (let i = 0; i <= 5; i++) {
      const t = t0 + ((t1 - t0) * i) / 5;
      el("text", { x: x(t), y: axisY + 16, "text-anchor": "middle" }, svg, t.toFixed(2));
    }
    el("text", { x: left + width / 2, y: axisY + 34, "text-anchor": "middle" }, svg,
       opts.timeLabel || "time (s)");
    const gap = opts.gap || Infinity;
    let outside = 0;
    keys.forEach((k, i) => {
      const pts = tracks[k];
      const c = colour(k);
      for (const [key, y] of [["valence", yv], ["arousal", ya]]) {
        const prop = key === "valence" ? "v" : "a";
        el("path", { d: pathData(pts, x, y, prop, gap), fill: "none", stroke: c,
                     "stroke-width": 2, class: `curve curve-${key}` }, svg);
        if (pts.length <= 60) {
          for (const p of pts) el("circle", { cx: x(p.t), cy: y(clamp(p[prop])), r: 3, fill: c }, svg);
        }
        outside += pts.filter((p) => Math.abs(p[prop]) > 1).length;
      }
      el("rect", { x: W - right + 12, y: 20 + 18 * i, width: 12, height: 12, fill: c }, svg);
      el("text", { x: W - right + 30, y: 30 + 18 * i }, svg, `face ${k} (${pts.length})`);
    });
    if (!keys.length) {
      el("text", { x: left + width / 2, y: 16 + ph, "text-anchor": "middle" }, svg, "no face scored");
    }
    return { tracks: keys.length, points: all.length, outside: outside };
  }

  // A vertical line at time t across both panels (the video's current time); null hides it.
  function setCursor(svg, t) {
    let line = svg.querySelector("line.cursor");
    if (!line) line = el("line", { class: "cursor", stroke: "#000", "stroke-dasharray": "4 3", y1: 16 }, svg);
    const d = svg.dataset;
    const inside = t !== null && t >= Number(d.t0) && t <= Number(d.t1);
    line.setAttribute("visibility", inside ? "visible" : "hidden");
    if (!inside) return;
    const xt = Number(d.left) + ((t - Number(d.t0)) / (Number(d.t1) - Number(d.t0))) * Number(d.width);
    for (const [k, v] of [["x1", xt], ["x2", xt], ["y2", d.bottom]]) line.setAttribute(k, v);
  }

  // Valence (x) against arousal (y) on the unit circle; the latest point of each track is larger.
  function drawCircumplex(svg, rows) {
    svg.replaceChildren();
    const S = 320, c = S / 2, r = 130;
    const px = (v) => c + clamp(v) * r, py = (a) => c - clamp(a) * r;
    el("circle", { cx: c, cy: c, r: r, fill: "#fafafa", stroke: "#999" }, svg);
    el("line", { x1: c - r - 10, x2: c + r + 10, y1: c, y2: c, stroke: "#bbb" }, svg);
    el("line", { x1: c, x2: c, y1: c - r - 10, y2: c + r + 10, stroke: "#bbb" }, svg);
    el("text", { x: c + r - 2, y: c - 6, "text-anchor": "end" }, svg, "valence +");
    el("text", { x: c - r + 2, y: c - 6 }, svg, "valence -");
    el("text", { x: c + 6, y: c - r + 14 }, svg, "arousal +");
    el("text", { x: c + 6, y: c + r - 4 }, svg, "arousal -");
    const labels = [["excited", 0.72, 0.72], ["tense", -0.72, 0.72], ["sad", -0.72, -0.72],
                    ["calm", 0.72, -0.72]];
    for (const [name, v, a] of labels) {
      el("text", { x: c + v * r * 1.05, y: c - a * r * 1.05, "text-anchor": "middle", fill: "#999" }, svg, name);
    }
    const tracks = byTrack(rows);
    let count = 0;
    for (const k of Object.keys(tracks)) {
      const pts = tracks[k];
      pts.forEach((p, i) => {
        const latest = i === pts.length - 1;
        el("circle", { cx: px(p.v), cy: py(p.a), r: latest ? 6 : 3, fill: colour(k),
                       "fill-opacity": latest ? 1 : 0.45, class: "va-point",
                       stroke: latest ? "#000" : "none" }, svg);
        count += 1;
      });
    }
    return count;
  }

  return { drawCurves: drawCurves, drawCircumplex: drawCircumplex, setCursor: setCursor,
           byTrack: byTrack, colour: colour };
})();
