// genmodels serve: the browser side. Plain JavaScript, no build step.
// Pages (hash routes): #/ the run list (+ leaderboard), #/leaderboard, #/run/<id>.
// Every string from disk goes through textContent (never innerHTML), so a run name cannot inject markup.
"use strict";

const app = document.getElementById("app");
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
  "#bcbd22", "#17becf"];

const EVAL_NAMES = { fid: "FID", kid: "KID", precision: "precision", recall: "recall", coverage: "coverage",
  nll_bpd: "NLL bits/dim", recon_mse: "recon MSE" };

// ------------------------------------------------------------------ helpers

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "class") node.className = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function svgEl(tag, attrs, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

async function getJSON(url) {
  const r = await fetch(url);
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

// Fetch a PNG from the API into an <img>; returns the server's compute time in ms. Errors become text.
async function loadImage(img, url, errorNode) {
  const r = await fetch(url);
  if (!r.ok) {
    let msg = r.statusText;
    try { msg = (await r.json()).error || msg; } catch (e) { /* not JSON */ }
    throw new Error(msg);
  }
  const blob = await r.blob();
  const old = img.src;
  await new Promise((resolve, reject) => {
    img.onload = resolve;
    img.onerror = () => reject(new Error("the image did not decode"));
    img.src = URL.createObjectURL(blob);
  });
  if (old && old.startsWith("blob:")) URL.revokeObjectURL(old);
  if (errorNode) errorNode.textContent = "";
  return parseFloat(r.headers.get("X-Elapsed-Ms") || "NaN");
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") q.set(k, v);
  return q.toString();
}

function fmt(v, digits) {
  if (v === null || v === undefined) return "–";
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v)) return v.toLocaleString("en");
  return Math.abs(v) >= 1000 ? v.toFixed(0) : v.toPrecision(digits || 4);
}

function fmtTime(s) {
  if (s === null || s === undefined) return "–";
  return s < 120 ? `${s.toFixed(1)} s` : `${(s / 60).toFixed(1)} min`;
}

// A file under RUNS_DIR as a /files/ URL, each path segment escaped (run names may hold spaces or '#').
function fileUrl(rel) {
  return "/files/" + rel.split("/").map(encodeURIComponent).join("/");
}

function runLink(id, text) {
  return el("a", { href: "#/run/" + encodeURIComponent(id), class: "run-link", "data-run": id }, text || id);
}

function setActive(name) {
  for (const n of ["runs", "leaderboard"]) {
    document.getElementById("nav-" + n).classList.toggle("active", n === name);
  }
}

function numberInput(name, value, attrs) {
  return el("input", Object.assign({ type: "number", name, value, step: 1 }, attrs || {}));
}

function labelled(text, control) {
  return el("label", {}, text, control);
}

// ------------------------------------------------------------------ run list and leaderboard

async function showRuns() {
  setActive("runs");
  const data = await getJSON("/api/runs");
  document.getElementById("root").textContent = data.root;
  const page = el("div", { id: "page-runs" }, el("h1", {}, "Runs"));
  if (!data.runs.length) {
    page.append(el("p", { class: "muted" }, `No runs under ${data.root} yet. Train one, e.g. `,
      el("code", {}, `genmodels train vae --dataset digits --out ${data.root}/vae-digits`)));
  } else {
    page.append(runTable(data.runs));
  }
  if (data.evaluated) {
    const lb = await getJSON("/api/leaderboard");
    page.append(el("section", { class: "card", id: "leaderboard" }, el("h2", {}, "Leaderboard"), leaderboardTables(lb)));
  } else if (data.runs.length) {
    page.append(el("p", { class: "muted" }, "No evaluations yet: ", el("code", {}, "genmodels evaluate RUN"),
      " writes eval.json, and the leaderboard appears here."));
  }
  app.replaceChildren(page);
}

function runTable(runs) {
  const head = ["run", "model", "family", "dataset", "steps", "wall time", "status", "last metrics", "evaluation"];
  const rows = runs.map((r) => {
    const metrics = Object.entries(r.metrics).map(([k, v]) => `${k} ${fmt(v)}`).join(", ");
    const ev = r.eval ? Object.entries(r.eval).filter(([k]) => k in EVAL_NAMES)
      .map(([k, v]) => `${EVAL_NAMES[k]} ${fmt(v)}`).join(", ") || "evaluated" : "–";
    // A damaged run (a file refused or unreadable) stays listed, marked, with the reason under its name.
    const status = r.damaged ? "damaged" : r.status;
    return el("tr", { class: r.damaged ? "run-row damaged" : "run-row", "data-run": r.id },
      el("td", {}, runLink(r.id), r.damaged ? el("div", { class: "error damage" }, r.damaged) : null),
      el("td", {}, r.model_name || "?"), el("td", {}, r.family || "?"),
      el("td", {}, r.dataset || "?"), el("td", { class: "num" }, fmt(r.steps)),
      el("td", { class: "num" }, fmtTime(r.wall_time_s)),
      el("td", { class: r.damaged ? "status-damaged error" : "status-" + status, title: r.damaged }, status),
      el("td", { class: "metrics" }, metrics || "–"), el("td", { class: "metrics" }, ev));
  });
  return el("table", { id: "runs-table" }, el("thead", {}, el("tr", {}, head.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows));
}

function leaderboardTables(lb) {
  const names = Object.keys(lb.datasets);
  if (!names.length) return el("p", { class: "muted" }, "No evaluated runs: run genmodels evaluate RUN first.");
  return el("div", {}, names.map((ds) => el("div", { class: "board" },
    el("h2", {}, ds + " (test split, sorted by FID)"),
    el("table", { class: "leaderboard-table" },
      el("thead", {}, el("tr", {}, lb.columns.map((c) => el("th", {}, c)))),
      el("tbody", {}, lb.datasets[ds].map((row) => el("tr", {}, lb.columns.map((c) =>
        el("td", { class: "num" }, c === "run" && row.id ? runLink(row.id, row.cells[c]) : row.cells[c])))))))));
}

async function showLeaderboard() {
  setActive("leaderboard");
  const lb = await getJSON("/api/leaderboard");
  app.replaceChildren(el("div", { id: "page-leaderboard" }, el("h1", {}, "Leaderboard"),
    el("p", { class: "muted" }, "Every eval.json under the runs folder; FID on each dataset's own feature network, lower is better."),
    leaderboardTables(lb)));
}

// ------------------------------------------------------------------ one run

async function showRun(id) {
  setActive(null);
  const base = "run=" + encodeURIComponent(id);
  const data = await getJSON("/api/run?" + base);
  const s = data.summary;
  const page = el("div", { id: "page-run", "data-run": id },
    el("p", {}, el("a", { href: "#/" }, "← all runs")),
    el("h1", {}, `${s.model_name} — ${id}`),
    el("div", { class: "facts" },
      el("span", {}, el("b", {}, "family "), s.family || "?"), el("span", {}, el("b", {}, "dataset "), s.dataset || "?"),
      el("span", {}, el("b", {}, "steps "), fmt(s.steps)), el("span", {}, el("b", {}, "wall time "), fmtTime(s.wall_time_s)),
      el("span", { class: "status-" + s.status }, el("b", {}, "status "), s.status),
      el("span", {}, el("b", {}, "parameters "), fmt((data.meta || {}).parameters))));
  if (s.damaged) page.append(el("p", { class: "error", id: "run-damaged" }, "This run is damaged: " + s.damaged));
  if (data.eval) {
    page.append(el("section", { class: "card", id: "eval" }, el("h2", {}, "Evaluation (eval.json)"),
      el("pre", {}, data.eval.lines.join("\n") || JSON.stringify(data.eval.summary, null, 1))));
  }
  page.append(lossSection(data.series), gridSection(data.grids));
  const modelArea = el("div", { id: "model-area" }, el("section", { class: "card" }, el("p", { class: "muted" }, "loading the model…")));
  page.append(modelArea);
  if (data.figures.length) {
    page.append(el("section", { class: "card", id: "figures" }, el("h2", {}, "Figures"), el("div", { class: "figures" },
      data.figures.map((f) => el("figure", {}, el("img", { src: fileUrl(f.file), alt: f.name, class: "figure" }),
        el("figcaption", {}, f.name))))));
  }
  page.append(el("section", { class: "card" }, el("details", {}, el("summary", {}, "config.yaml and run.json"),
    el("pre", {}, JSON.stringify({ config: data.config, run: data.meta }, null, 1)))));
  app.replaceChildren(page);
  try {
    const info = await getJSON("/api/model?" + base);
    if (!page.isConnected) return;  // the user moved on while the model loaded: build nothing for a gone page
    modelArea.replaceChildren(...modelSections(base, info, data));
  } catch (e) {
    modelArea.replaceChildren(el("section", { class: "card" }, el("h2", {}, "Generate"),
      el("p", { class: "error", id: "model-error" }, e.message)));
  }
}

// Loss curves as small SVG charts, one per logged quantity (their scales differ by orders of magnitude).
function lossSection(series) {
  const names = Object.keys(series);
  const sec = el("section", { class: "card", id: "losses" }, el("h2", {}, "Loss curves"));
  if (!names.length) return (sec.append(el("p", { class: "muted" }, "metrics.jsonl holds no records yet.")), sec);
  sec.append(el("div", { class: "curves" }, names.map((n) => curve(n, series[n]))));
  return sec;
}

function curve(name, pts) {
  const W = 260, H = 130, L = 46, B = 18, T = 6, Rm = 8;
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  const sorted = [...ys].sort((a, b) => a - b);
  const lo = sorted[0];
  // An early spike would flatten the rest: cap the axis at the 98th percentile when the maximum is far above it.
  const p98 = sorted[Math.floor(0.98 * (sorted.length - 1))];
  let hi = sorted[sorted.length - 1];
  if (hi - lo > 4 * (p98 - lo) && p98 > lo) hi = p98;
  if (hi === lo) hi = lo + 1;
  const x0 = xs[0], x1 = xs[xs.length - 1] === x0 ? x0 + 1 : xs[xs.length - 1];
  const px = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - Rm);
  const py = (y) => T + (1 - (Math.min(y, hi) - lo) / (hi - lo)) * (H - T - B);
  const d = pts.map((p, i) => `${i ? "L" : "M"}${px(p[0]).toFixed(1)},${py(p[1]).toFixed(1)}`).join("");
  const svg = svgEl("svg", { width: W, height: H, class: "curve-svg", "data-points": pts.length },
    svgEl("line", { x1: L, y1: H - B, x2: W - Rm, y2: H - B, stroke: "#ccc" }),
    svgEl("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#ccc" }),
    svgEl("text", { x: L - 4, y: T + 8, "text-anchor": "end" }, fmt(hi, 3)),
    svgEl("text", { x: L - 4, y: H - B, "text-anchor": "end" }, fmt(lo, 3)),
    svgEl("text", { x: L, y: H - 4 }, fmt(x0)),
    svgEl("text", { x: W - Rm, y: H - 4, "text-anchor": "end" }, "step " + fmt(xs[xs.length - 1])),
    svgEl("path", { d, fill: "none", stroke: "#2f5fd0", "stroke-width": 1.5 }));
  return el("div", { class: "curve" }, el("div", { class: "title" }, name), svg);
}

function gridSection(grids) {
  const sec = el("section", { class: "card", id: "grids" }, el("h2", {}, "Samples during training"));
  if (!grids.length) return (sec.append(el("p", { class: "muted" }, "No sample grids saved yet.")), sec);
  const img = el("img", { class: "pix", id: "grid-img", height: 300, alt: "sample grid" });
  const label = el("span", { id: "grid-label" });
  const slider = el("input", { type: "range", id: "grid-slider", min: 0, max: grids.length - 1, value: grids.length - 1 });
  const show = () => {
    const g = grids[+slider.value];
    img.src = fileUrl(g.file);
    label.textContent = `${g.label} (${+slider.value + 1} of ${grids.length})`;
  };
  slider.addEventListener("input", show);
  show();
  slider.hidden = grids.length < 2;  // one grid (final.png alone): nothing to slide over
  // In a box of fixed height: the grid loads after the page is built (or never, if its file is gone), and
  // a box that grew then would shift every section below it (a mask being drawn jumped from the pointer).
  sec.append(el("div", { class: "slider" }, slider, label), el("div", { class: "grid-box" }, img));
  return sec;
}

// ------------------------------------------------------------------ playing with the model

function classPicker(info, id, anyText) {
  if (!info.conditional) return null;
  const options = [anyText ? el("option", { value: "" }, anyText) : null,
    ...info.classes.map((c, i) => el("option", { value: i }, `${i}: ${c}`))];
  return labelled("class", el("select", { id, name: "class" }, options));
}

// A section reads its own controls through these references, never by document id: its requests can
// run before the section is on the page or after the user has moved to another one.
const pickedClass = (picker) => (picker ? picker.querySelector("select").value : null);

function modelSections(base, info, data) {
  // The checkpoint every model request uses; made first so that sections built below can read it.
  const steps = data.checkpoints.length ? data.checkpoints : [info.step];
  const stepSelect = el("select", { id: "gen-step" },
    steps.slice().reverse().map((s) => el("option", { value: s, selected: s === info.step }, `step ${s}`)));
  const common = () => ({ step: stepSelect.value });
  const out = info.generate
    ? [generateSection(base, info, labelled("checkpoint", stepSelect), common)]
    : [translateSection(base, info, labelled("checkpoint", stepSelect), common)];
  if (info.interpolate) out.push(interpolateSection(base, info, common));
  if (info.explore) out.push(explorerSection(base, info, common));
  if (info.complete) out.push(completeSection(base, info, common));
  if (info.inpaint) out.push(inpaintSection(base, info, common));
  if (info.edit) out.push(editSection(base, info, common));
  return out;
}

function actionButton(id, text, run) {
  const btn = el("button", { id }, text);
  btn.addEventListener("click", async () => {
    btn.disabled = true;
    try { await run(); } finally { btn.disabled = false; }
  });
  return btn;
}

// Run an image request for a section: show the picture, its compute time, or the error.
async function fill(img, url, timing, error) {
  try {
    const ms = await loadImage(img, url, error);
    timing.textContent = isNaN(ms) ? "" : `server ${ms.toFixed(0)} ms`;
    img.hidden = false;
  } catch (e) {
    error.textContent = e.message;
  }
}

// One control per sampling option the model declares: a menu for a fixed set of choices, else a text field
// (the server types and checks it); left blank or on "default", the model's own default applies.
function optionControl(o) {
  const hint = o.help + (o.minimum !== null ? ` (${o.type}, at least ${o.minimum})` : ` (${o.type})`);
  const control = o.choices
    ? el("select", { class: "opt", name: o.name, title: hint },
      el("option", { value: "" }, "default"), o.choices.map((c) => el("option", { value: c }, c)))
    : el("input", { type: "text", class: "opt", name: o.name, placeholder: "default", title: hint });
  return labelled(o.name, control);
}

// A sheet's shown size is known before it arrives (make_grid: 2 px padding; a lone image has none): its box
// is reserved, so a sheet drawn without a click moves no section below it (on a slow machine the first
// samples landed while a mask was being painted on the inpaint canvas further down, and the canvas slid
// away from the pointer mid-stroke).
function sheetBox(img) {
  const out = el("div", { class: "out" }, img);
  const reserve = (cols, rows, shape, columnPx) => {
    const [, H, W] = shape;
    const [h, w] = cols * rows === 1 ? [H, W] : [rows * (H + 2) + 2, cols * (W + 2) + 2];
    img.style.width = cols * columnPx + "px";
    out.style.minHeight = Math.ceil(cols * columnPx * h / w) + "px";
  };
  return { out, reserve };
}

function generateSection(base, info, stepPicker, common) {
  const opts = info.sample_options.map(optionControl);
  const img = el("img", { class: "pix", id: "gen-img", hidden: true, alt: "generated samples" });
  const timing = el("span", { class: "timing", id: "gen-timing" }), error = el("p", { class: "error", id: "gen-error" });
  const seed = numberInput("seed", 0, { id: "gen-seed", min: 0 }), n = numberInput("n", 16, { id: "gen-n", min: 1, max: 64 });
  const picker = classPicker(info, "gen-class", "all (cycled)");
  const { out, reserve } = sheetBox(img);
  const go = async () => {
    const params = Object.assign(common(), { n: n.value, seed: seed.value, class: pickedClass(picker) });
    for (const o of sec.querySelectorAll(".opt")) params["opt." + o.name] = o.value;
    const k = Math.max(1, Math.min(64, Math.floor(+params.n) || 16));
    reserve(Math.min(8, k), Math.ceil(k / Math.min(8, k)), info.image_shape, 48);
    await fill(img, `/api/generate.png?${base}&${query(params)}`, timing, error);
  };
  const sec = el("section", { class: "card", id: "generate" }, el("h2", {}, "Generate"),
    el("p", { class: "muted" }, `${info.model_name}, step ${info.step} (${info.weights} weights), ` +
      `${fmt(info.parameters)} parameters; the same images as genmodels sample for the same seed.`),
    el("div", { class: "controls" }, labelled("seed", seed), labelled("images", n), picker, stepPicker, opts,
      actionButton("gen-button", "generate", go), timing),
    error, out);
  setTimeout(go, 0);  // a first grid without a click
  return sec;
}

function interpolateSection(base, info, common) {
  const img = el("img", { class: "pix", id: "interp-img", hidden: true, alt: "interpolation" });
  const timing = el("span", { class: "timing" }), error = el("p", { class: "error", id: "interp-error" });
  const a = numberInput("a", 0, { id: "interp-a", min: 0 }), b = numberInput("b", 1, { id: "interp-b", min: 0 });
  const steps = numberInput("steps", 10, { id: "interp-steps", min: 2, max: 16 });
  const picker = classPicker(info, "interp-class", null);
  const go = async () => {
    const params = Object.assign(common(), { a: a.value, b: b.value, steps: steps.value, class: pickedClass(picker) });
    await fill(img, `/api/interpolate.png?${base}&${query(params)}`, timing, error);
    img.style.width = +params.steps * 56 + "px";
  };
  return el("section", { class: "card", id: "interpolate" }, el("h2", {}, "Interpolate"),
    el("p", { class: "muted" }, "Decodes the path between the latents of the samples drawn with seeds A and B " +
      "(slerp between prior draws; a straight line between an autoencoder's codes)."),
    el("div", { class: "controls" }, labelled("seed A", a), labelled("seed B", b), labelled("steps", steps),
      picker, actionButton("interp-button", "interpolate", go), timing),
    error, el("div", { class: "out" }, img));
}

// The 2-D explorer: the test set's codes drawn on a canvas; the point under the cursor is decoded live.
// One request in flight at a time: moves during it only keep the latest point, sent when it returns.
function explorerSection(base, info, common) {
  const S = 300;
  const canvas = el("canvas", { id: "explorer-canvas", width: S, height: S });
  const img = el("img", { class: "pix", id: "explorer-img", width: 168, height: 168, alt: "decoded point" });
  const coords = el("div", { class: "muted", id: "explorer-z" }, "move over the map");
  const error = el("p", { class: "error", id: "explorer-error" });
  const picker = classPicker(info, "explorer-class", null);
  const sec = el("section", { class: "card", id: "explorer" }, el("h2", {}, "Explore the 2-D latent space"),
    el("p", { class: "muted" }, "Move the pointer over the map: the image is decoded from the point under it. " +
      "Dots are test images' codes, coloured by class."),
    el("div", { class: "controls" }, picker),
    el("div", { class: "explorer" }, canvas, el("div", {}, img, coords)), error);
  let map = null, busy = false, pending = null, marker = null;
  const draw = () => {
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, S, S);
    if (!map) return;
    const [[x0, x1], [y0, y1]] = map.range;
    map.points.forEach((p, i) => {
      ctx.fillStyle = PALETTE[(map.labels[i] || 0) % PALETTE.length];
      ctx.globalAlpha = 0.55;
      ctx.fillRect(((p[0] - x0) / (x1 - x0)) * S - 1.5, (1 - (p[1] - y0) / (y1 - y0)) * S - 1.5, 3, 3);
    });
    ctx.globalAlpha = 1;
    if (marker) {
      ctx.strokeStyle = "#000";
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.arc(marker[0], marker[1], 6, 0, 2 * Math.PI);
      ctx.stroke();
    }
  };
  const request = async (z) => {
    if (busy) { pending = z; return; }
    busy = true;
    const params = Object.assign(common(), { z: z.map((v) => v.toFixed(4)).join(","), class: pickedClass(picker) });
    try {
      const ms = await loadImage(img, `/api/decode.png?${base}&${query(params)}`, error);
      coords.textContent = `z = (${z[0].toFixed(2)}, ${z[1].toFixed(2)}), ${ms.toFixed(0)} ms`;
      img.dataset.z = params.z;
    } catch (e) {
      error.textContent = e.message;
    } finally {
      busy = false;
    }
    if (pending) { const next = pending; pending = null; request(next); }
  };
  const at = (ev) => {
    const r = canvas.getBoundingClientRect();
    const u = Math.min(Math.max((ev.clientX - r.left) / r.width, 0), 1);
    const v = Math.min(Math.max((ev.clientY - r.top) / r.height, 0), 1);
    marker = [u * S, v * S];
    draw();
    const [[x0, x1], [y0, y1]] = map.range;
    request([x0 + u * (x1 - x0), y1 - v * (y1 - y0)]);
  };
  canvas.addEventListener("pointermove", (ev) => map && at(ev));
  canvas.addEventListener("pointerdown", (ev) => map && at(ev));
  getJSON("/api/latent?" + base + "&" + query(common())).then((m) => {
    map = m;
    canvas.dataset.points = m.points.length;
    marker = [S / 2, S / 2];
    draw();
    request([(m.range[0][0] + m.range[0][1]) / 2, (m.range[1][0] + m.range[1][1]) / 2]);
  }).catch((e) => { error.textContent = e.message; });
  return sec;
}

function completeSection(base, info, common) {
  const H = info.image_shape[1] || 28;
  const img = el("img", { class: "pix", id: "complete-img", hidden: true, alt: "completions" });
  const timing = el("span", { class: "timing" }), error = el("p", { class: "error", id: "complete-error" });
  const { index, thumbs } = testImagePicker(base, common, "complete");
  const rows = el("input", { type: "range", id: "complete-rows", min: 0, max: H, value: Math.floor(H / 2) });
  const rowsLabel = el("span", {}, `${rows.value} rows`);
  rows.addEventListener("input", () => { rowsLabel.textContent = `${rows.value} rows`; });
  const samples = numberInput("samples", 4, { id: "complete-samples", min: 1, max: 8 });
  const seed = numberInput("seed", 0, { id: "complete-seed", min: 0 });
  const picker = classPicker(info, "complete-class", "the image's own");
  const go = async () => {
    const params = Object.assign(common(), { index: index.value, rows: rows.value, samples: samples.value,
      seed: seed.value, class: pickedClass(picker) });
    await fill(img, `/api/complete.png?${base}&${query(params)}`, timing, error);
    img.style.width = (+params.samples + 2) * 64 + "px";
  };
  return el("section", { class: "card", id: "complete" }, el("h2", {}, "Complete a test image"),
    el("p", { class: "muted" }, "Keeps the top rows of the chosen test image and samples the rest. " +
      "Each result shows the kept rows (the rest grey), the completions, then the original."),
    thumbs,
    el("div", { class: "controls" }, labelled("test image", index), labelled("keep the top", el("span", {}, rows, " ", rowsLabel)),
      labelled("completions", samples), labelled("seed", seed),
      picker, actionButton("complete-button", "complete", go), timing),
    error, el("div", { class: "out" }, img));
}

// Ten test images to choose from (the chosen one framed), and the number field they set.
function testImagePicker(base, common, prefix) {
  const index = numberInput("index", 0, { id: `${prefix}-index`, min: 0 });
  const thumbs = el("div", { class: "thumbs", id: `${prefix}-thumbs` });
  const choose = (i) => {
    index.value = i;
    for (const t of thumbs.children) t.classList.toggle("chosen", +t.dataset.index === i);
  };
  for (let i = 0; i < 10; i++) {
    const t = el("img", { class: "pix thumb", "data-index": i, alt: `test image ${i}`, title: `test image ${i}` });
    t.addEventListener("click", () => choose(i));
    thumbs.append(t);
    loadImage(t, `/api/test_image.png?${base}&${query(Object.assign(common(), { index: i }))}`).catch(() => {});
  }
  choose(0);
  return { index, thumbs };
}

// A mask the user paints: one cell per pixel, white = fill. Sent as H*W characters 0 / 1.
function maskCanvas(H, W) {
  const scale = Math.max(4, Math.floor(192 / Math.max(H, W)));
  const canvas = el("canvas", { id: "inpaint-canvas", width: W * scale, height: H * scale, class: "mask",
    title: "drag to mark the pixels to fill" });
  const cells = new Uint8Array(H * W);
  const ctx = canvas.getContext("2d");
  const draw = () => {
    ctx.fillStyle = "#000"; ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.fillStyle = "#fff";
    for (let i = 0; i < H * W; i++) if (cells[i]) ctx.fillRect((i % W) * scale, Math.floor(i / W) * scale, scale, scale);
  };
  // A stroke paints every cell along the segment from the previous pointer position, so a fast drag (or
  // pointer events the browser coalesced while busy) leaves no gaps.
  let down = false, last = null;
  const brush = Math.max(1, Math.round(Math.min(H, W) / 14));
  const dab = (x, y) => {
    for (let dy = 0; dy < brush; dy++) for (let dx = 0; dx < brush; dx++) {
      const yy = y + dy, xx = x + dx;
      if (yy >= 0 && yy < H && xx >= 0 && xx < W) cells[yy * W + xx] = 1;
    }
  };
  const paint = (e) => {
    const r = canvas.getBoundingClientRect();
    const x = (e.clientX - r.left) / r.width * W, y = (e.clientY - r.top) / r.height * H;
    const [x0, y0] = last || [x, y];
    const n = Math.max(1, Math.ceil(2 * Math.max(Math.abs(x - x0), Math.abs(y - y0))));
    for (let i = 0; i <= n; i++) dab(Math.floor(x0 + (x - x0) * i / n), Math.floor(y0 + (y - y0) * i / n));
    last = [x, y];
    draw();
  };
  canvas.addEventListener("pointerdown", (e) => {  // captured: a drag that leaves the canvas paints to its edge
    down = true; last = null; canvas.setPointerCapture(e.pointerId); paint(e);
  });
  canvas.addEventListener("pointermove", (e) => { if (down) paint(e); });
  window.addEventListener("pointerup", () => { down = false; last = null; });
  draw();
  return { canvas, bits: () => Array.from(cells).join(""), clear: () => { cells.fill(0); draw(); } };
}

function inpaintSection(base, info, common) {
  const [, H, W] = info.image_shape;
  const img = el("img", { class: "pix", id: "inpaint-img", hidden: true, alt: "inpaintings" });
  const timing = el("span", { class: "timing" }), error = el("p", { class: "error", id: "inpaint-error" });
  const { index, thumbs } = testImagePicker(base, common, "inpaint");
  const masks = info.inpaint_masks.concat(["drawn"]);
  const mask = el("select", { id: "inpaint-mask", name: "mask" }, masks.map((m) => el("option", { value: m }, m)));
  const painter = maskCanvas(H, W);
  const drawing = el("div", { class: "drawing", hidden: true }, painter.canvas,
    el("button", { id: "inpaint-clear", type: "button", onclick: painter.clear }, "clear"));
  mask.addEventListener("change", () => { drawing.hidden = mask.value !== "drawn"; });
  const samples = numberInput("samples", 4, { id: "inpaint-samples", min: 1, max: 8 });
  const seed = numberInput("seed", 0, { id: "inpaint-seed", min: 0 });
  const picker = classPicker(info, "inpaint-class", "the image's own");
  const go = async () => {
    const params = Object.assign(common(), { index: index.value, samples: samples.value, seed: seed.value,
      class: pickedClass(picker), mask: mask.value === "drawn" ? painter.bits() : mask.value });
    await fill(img, `/api/inpaint.png?${base}&${query(params)}`, timing, error);
    img.style.width = (+params.samples + 2) * 64 + "px";
  };
  const how = info.complete ? "samples the hidden bottom rows (an autoregressive model needs them last in raster order)"
    : info.edit === "sdedit" ? "fills them by RePaint" : "fits the model's code to the known pixels";
  return el("section", { class: "card", id: "inpaint" }, el("h2", {}, "Inpaint a test image"),
    el("p", { class: "muted" }, `Hides the mask's pixels of the chosen test image and ${how}. ` +
      "Each result shows the known pixels (the hidden ones grey), the inpaintings, then the original."),
    thumbs,
    el("div", { class: "controls" }, labelled("test image", index), labelled("mask", mask),
      labelled("inpaintings", samples), labelled("seed", seed), picker,
      actionButton("inpaint-button", "inpaint", go), timing),
    drawing, error, el("div", { class: "out" }, img));
}

function editSection(base, info, common) {
  const img = el("img", { class: "pix", id: "edit-img", hidden: true, alt: "edits" });
  const timing = el("span", { class: "timing" }), error = el("p", { class: "error", id: "edit-error" });
  const { index, thumbs } = testImagePicker(base, common, "edit");
  const sdedit = info.edit === "sdedit";
  const strength = el("input", { type: "range", id: "edit-strength", min: 0.05, max: 1, step: 0.05, value: 0.5 });
  const strengthLabel = el("span", {}, strength.value);
  strength.addEventListener("input", () => { strengthLabel.textContent = strength.value; });
  const samples = numberInput("samples", 4, { id: "edit-samples", min: 1, max: 8 });
  const seed = numberInput("seed", 0, { id: "edit-seed", min: 0 });
  const classes = sdedit ? (info.conditional ? info.classes : []) : info.dataset_classes;
  const target = classes.length
    ? el("select", { id: "edit-class", name: "class" }, sdedit ? el("option", { value: "" }, "the image's own") : null,
      classes.map((c, i) => el("option", { value: i }, `${i}: ${c}`)))
    : null;
  const go = async () => {
    const params = Object.assign(common(), { index: index.value, seed: seed.value, samples: sdedit ? samples.value : 1,
      strength: sdedit ? strength.value : null, class: target ? target.value : null });
    await fill(img, `/api/edit.png?${base}&${query(params)}`, timing, error);
    img.style.width = (+params.samples + 1) * 64 + "px";
  };
  const text = sdedit
    ? "SDEdit: noises the chosen test image to the strength's level and denoises it; a small strength stays " +
      "close to the image, a large one makes a new one" + (info.conditional ? ", towards the target class." : ".")
    : "Latent arithmetic: adds the difference between the target class's mean code and the image's class's " +
      "to the image's code, and decodes it.";
  return el("section", { class: "card", id: "edit" }, el("h2", {}, "Edit a test image"),
    el("p", { class: "muted" }, text + " Each result shows the image, then its edits."),
    thumbs,
    el("div", { class: "controls" }, labelled("test image", index),
      sdedit ? labelled("strength", el("span", {}, strength, " ", strengthLabel)) : null,
      target ? labelled("target class", target) : null,
      sdedit ? labelled("edits", samples) : null, sdedit ? labelled("seed", seed) : null,
      actionButton("edit-button", "edit", go), timing),
    error, el("div", { class: "out" }, img));
}

// A translator's panel: test examples in columns, each input above its translation and the other side's image.
function translateSection(base, info, stepPicker, common) {
  const img = el("img", { class: "pix", id: "translate-img", hidden: true, alt: "translations" });
  const { out, reserve } = sheetBox(img);
  const timing = el("span", { class: "timing" }), error = el("p", { class: "error", id: "translate-error" });
  const { index, thumbs } = testImagePicker(base, common, "translate");
  const n = numberInput("n", 8, { id: "translate-n", min: 1, max: 8 });
  const [from, to] = info.sides.length === 2 ? info.sides : ["source", "target"];
  const direction = el("select", { id: "translate-direction", name: "direction" },
    info.translate.map((d) => el("option", { value: d }, d === "forward" ? `${from} to ${to}` : `${to} to ${from}`)));
  const go = async () => {
    const params = Object.assign(common(), { index: index.value, n: n.value, direction: direction.value });
    reserve(Math.max(1, Math.min(8, Math.floor(+params.n) || 8)), 3, info.image_shape, 64);  // input, translation, target
    await fill(img, `/api/translate.png?${base}&${query(params)}`, timing, error);
  };
  const sec = el("section", { class: "card", id: "translate" }, el("h2", {}, "Translate test images"),
    el("p", { class: "muted" }, `${info.model_name}, step ${info.step}, ${fmt(info.parameters)} parameters. ` +
      "From the chosen test image on, one column each: the input, its translation, then the other side's " +
      "drawing of it (the target); the same sheet as genmodels translate."),
    thumbs,
    el("div", { class: "controls" }, labelled("first test image", index), labelled("images", n),
      labelled("direction", direction), stepPicker, actionButton("translate-button", "translate", go), timing),
    error, out);
  setTimeout(go, 0);
  return sec;
}

// ------------------------------------------------------------------ routing

async function route() {
  const hash = location.hash || "#/";
  try {
    if (hash.startsWith("#/run/")) await showRun(decodeURIComponent(hash.slice(6)));
    else if (hash === "#/leaderboard") await showLeaderboard();
    else await showRuns();
  } catch (e) {
    app.replaceChildren(el("p", { class: "error", id: "page-error" }, e.message));
  }
}

window.addEventListener("hashchange", route);
route();
