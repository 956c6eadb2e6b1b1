// attngrad explorer: plain JavaScript over the HTTP API (no build step, no external resources).
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  info: null,
  source: null,       // {sample: id} or {file: File}
  imageId: null,      // content hash returned by /api/predict
  predictions: [],
  target: null,       // class index being explained
  transferTimer: null, // the attention-transfer animation
  methodInfo: {},     // method name -> {name, signed, red, legend} from /api/info
};

// ---------------------------------------------------------------- HTTP
function errorText(body, status) {
  const d = body && body.detail;
  if (!d) return `request failed (HTTP ${status})`;
  if (typeof d === "string") return d;
  if (Array.isArray(d)) return d.map((e) => `${(e.loc || []).slice(-1)[0]}: ${e.msg}`).join("; ");
  return d.message || JSON.stringify(d);
}

async function api(path, form, retries = 4) {
  const res = await fetch(path, form ? { method: "POST", body: form } : {});
  let body = null;
  try { body = await res.json(); } catch (_) { /* not JSON */ }
  if (res.status === 503 && res.headers.get("Retry-After") && retries > 0) {  // busy (not: text model missing)
    const wait = Number(res.headers.get("Retry-After") || 1);
    setStatus(`server busy, retrying in ${wait} s…`);
    await new Promise((r) => setTimeout(r, wait * 1000));
    return api(path, form, retries - 1);
  }
  if (!res.ok) {
    const err = new Error(errorText(body, res.status));
    err.status = res.status;
    throw err;
  }
  return body;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}
function setStatus(text) { $("status").textContent = text; }

// ---------------------------------------------------------------- image choice
function imageForm() {
  const form = new FormData();
  if (state.imageId) form.append("image_id", state.imageId);
  else if (state.source.sample) form.append("sample", state.source.sample);
  else form.append("file", state.source.file);
  return form;
}

// POST with the current image; if the server forgot our image_id, send the image again once.
async function withImage(path, extra) {
  const build = () => { const f = imageForm(); for (const [k, v] of Object.entries(extra)) if (v !== null && v !== "") f.append(k, v); return f; };
  try {
    return await api(path, build());
  } catch (err) {
    if (err.status !== 404 || !state.imageId) throw err;
    state.imageId = null;
    return api(path, build());
  }
}

async function chooseImage(source, previewUrl, caption) {
  state.source = source;
  state.imageId = null;
  state.target = null;
  showError("");
  $("explained").hidden = true;
  $("predictions").innerHTML = "";
  document.querySelectorAll("#gallery button").forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.sample === source.sample)));
  setStatus("predicting…");
  try {
    const res = await withImage("/api/predict", { k: 5 });
    state.imageId = res.image_id;
    state.predictions = res.predictions;
    $("preview-img").src = previewUrl;
    $("preview-caption").textContent = caption;
    $("preview").hidden = false;
    renderPredictions();
    $("experiments").hidden = false;
    $("rewrite-result").innerHTML = "";
    $("transfer-result").innerHTML = "";
    clearInterval(state.transferTimer);
    state.transferTimer = null;
    setStatus("");
  } catch (err) {
    $("preview").hidden = true;
    $("experiments").hidden = true;
    setStatus("");
    showError(err.message);
  }
}

function renderPredictions() {
  const list = $("predictions");
  list.innerHTML = "";
  for (const p of state.predictions) {
    const li = document.createElement("li");
    const btn = document.createElement("button");
    btn.className = "pred";
    btn.dataset.index = p.index;
    btn.setAttribute("aria-pressed", String(p.index === state.target));
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = p.label;
    const prob = document.createElement("span");
    prob.className = "prob";
    prob.textContent = `${(100 * p.probability).toFixed(1)} %`;
    btn.append(label, prob);
    btn.title = `class ${p.index}, logit ${p.logit.toFixed(3)}`;
    btn.addEventListener("click", () => { state.target = p.index; renderPredictions(); explain(); });
    li.append(btn);
    list.append(li);
  }
}

// ---------------------------------------------------------------- explain
function selectedMethods() {
  return [...document.querySelectorAll("#methods input:checked")].map((i) => i.value);
}

async function explain() {
  if (state.target === null) return;
  const methods = selectedMethods();
  if (!methods.length) { showError("choose at least one method"); return; }
  showError("");
  setStatus("explaining…");
  const contrast = $("contrast").value.trim();
  let loss = $("loss").value;
  if (contrast && loss === "logit") loss = "normdiff";
  if (!contrast && loss !== "logit") loss = "logit";
  $("loss").value = loss;
  try {
    const res = await withImage("/api/explain", {
      methods: methods.join(","), target: String(state.target), contrast, loss, guide_sample: $("guide").value,
    });
    renderResults(res);
    setStatus("");
  } catch (err) {
    setStatus("");
    showError(err.message);
  }
}

// What red (and blue) mean in one method's map: support/oppose for a signed method, magnitude otherwise
// (the method's `signed`, from /api/info's method_details or the result itself).
function isSigned(name, signed) {
  return signed === undefined ? Boolean(state.methodInfo[name] && state.methodInfo[name].signed) : Boolean(signed);
}

function legendText(name, signed, target, contrast) {
  if (!isSigned(name, signed)) return "red: magnitude (how much, not for or against; this method has no sign)";
  if (contrast) return `red: pushes to ${target} over ${contrast}; blue: to ${contrast}`;
  return target ? `red: supports ${target}; blue: opposes it` : "red: supports; blue: opposes";
}

function legendNode(name, signed, target, contrast) {
  const node = el("p", { className: "legend", textContent: legendText(name, signed, target, contrast) });
  node.dataset.signed = String(isSigned(name, signed));
  return node;
}

function renderResults(res) {
  const vs = res.contrast ? ` vs ${res.contrast.label} (loss ${res.loss})` : ` (loss ${res.loss})`;
  const guided = res.guided ? `, guided by ${$("guide").selectedOptions[0].textContent}` : "";
  $("explained-title").textContent = `Explaining “${res.target.label}”${vs}${guided}`;
  const box = $("results");
  box.innerHTML = "";
  const [gh, gw] = res.grid;
  for (const m of res.methods) {
    const card = document.createElement("div");
    card.className = "result";
    card.dataset.method = m.name;
    const title = document.createElement("h3");
    title.textContent = m.name;
    const wrap = document.createElement("div");
    wrap.className = "overlay-wrap";
    const img = document.createElement("img");
    img.className = "overlay";
    img.alt = `${m.name} map for ${res.target.label}`;
    img.src = m.overlay;
    const patch = document.createElement("div");
    patch.className = "patch-box";
    wrap.append(img, patch);
    const readout = document.createElement("div");
    readout.className = "readout";
    readout.textContent = `max|S| = ${m.peak.toExponential(3)}`;
    wrap.addEventListener("mousemove", (ev) => {
      const r = wrap.getBoundingClientRect();
      const col = Math.min(gw - 1, Math.max(0, Math.floor(((ev.clientX - r.left) / r.width) * gw)));
      const row = Math.min(gh - 1, Math.max(0, Math.floor(((ev.clientY - r.top) / r.height) * gh)));
      const v = m.map[row][col];
      const norm = m.peak > 0 ? v / m.peak : 0;
      readout.textContent = `patch (${row}, ${col}): S = ${v.toExponential(3)}, S/max|S| = ${norm.toFixed(3)}`;
      Object.assign(patch.style, {
        display: "block", left: `${(col / gw) * 100}%`, top: `${(row / gh) * 100}%`,
        width: `${100 / gw}%`, height: `${100 / gh}%`,
      });
    });
    wrap.addEventListener("mouseleave", () => { patch.style.display = "none"; });
    const links = document.createElement("div");
    links.className = "downloads";
    const png = document.createElement("a");
    png.href = m.png_url;
    png.download = `${res.target.label}_${m.name}.png`;
    png.textContent = "download PNG";
    const npy = document.createElement("a");
    npy.href = m.npy_url;
    npy.download = `${res.target.label}_${m.name}.npy`;
    npy.textContent = "raw map (.npy)";
    links.append(png, npy);
    const legend = legendNode(m.name, m.signed, res.target.label, res.contrast && res.contrast.label);
    card.append(title, wrap, legend, readout, links);
    box.append(card);
  }
  $("explained").hidden = false;
  drawColorbar($("colorbar"));
}

// Colour bar: the same colormap and fixed [-1, 1] range as attngrad.viz (colours sent by /api/info).
function drawColorbar(canvas) {
  const ctx = canvas.getContext("2d");
  const stops = state.info.colormap;
  const top = 10, bottom = canvas.height - 10, x = 4, w = 18;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const grad = ctx.createLinearGradient(0, bottom, 0, top);
  stops.forEach((c, i) => grad.addColorStop(i / (stops.length - 1), c));
  ctx.fillStyle = grad;
  ctx.fillRect(x, top, w, bottom - top);
  ctx.strokeStyle = "#555";
  ctx.strokeRect(x, top, w, bottom - top);
  ctx.fillStyle = "#222";
  ctx.font = "11px sans-serif";
  ctx.textBaseline = "middle";
  for (const t of [-1, -0.5, 0, 0.5, 1]) {
    const y = bottom - ((t + 1) / 2) * (bottom - top);
    ctx.fillRect(x + w, y, 4, 1);
    ctx.fillText(String(t), x + w + 7, y);
  }
  canvas.dataset.drawn = "true";
}

// ---------------------------------------------------------------- text tab
function showTab(name) {
  for (const [tab, panel] of [["tab-images", "image-tab"], ["tab-text", "text-tab"], ["tab-lm", "lm-tab"], ["tab-vlm", "vlm-tab"]]) {
    const on = tab === `tab-${name}`;
    $(tab).setAttribute("aria-selected", String(on));
    $(panel).hidden = !on;
  }
}

// The colour of a normalised value v in [-1, 1]: linear between the colormap stops of /api/info.
function colourOf(v) {
  const stops = state.info.colormap;
  const x = ((Math.max(-1, Math.min(1, v)) + 1) / 2) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x)), f = x - i;
  const rgb = (hex) => [1, 3, 5].map((k) => parseInt(hex.slice(k, k + 2), 16));
  const a = rgb(stops[i]), b = rgb(stops[i + 1]);
  return a.map((c, k) => Math.round(c + f * (b[k] - c)));
}

// One text with each word on its colour (gaps between words kept); hover shows the raw and normalised score.
function renderWords(text, words, readout) {
  const box = el("p", { className: "words" });
  let position = 0;
  for (const w of words) {
    box.append(text.slice(position, w.start));
    position = w.end;
    const [r, g, b] = colourOf(w.normalized);
    const ink = 0.299 * r + 0.587 * g + 0.114 * b > 140 ? "#000" : "#fff";
    const span = el("span", { className: "word", textContent: w.text });
    span.dataset.normalized = String(w.normalized);
    span.style.background = `rgb(${r}, ${g}, ${b})`;
    span.style.color = ink;
    span.title = `score ${w.score.toExponential(3)} (S/max|S| ${w.normalized.toFixed(3)})`;
    span.addEventListener("mouseenter", () => {
      readout.textContent = `“${w.text}”: S = ${w.score.toExponential(3)}, S/max|S| = ${w.normalized.toFixed(3)}`;
    });
    box.append(span);
  }
  box.append(text.slice(position));
  return box;
}

async function explainText(ev) {
  ev.preventDefault();
  const methods = [...document.querySelectorAll("#text-methods input:checked")].map((i) => i.value);
  if (!methods.length) { showError("choose at least one method"); return; }
  const form = new FormData();
  const fields = { text: $("text-input").value, against: $("text-against").value.trim(),
    labels: $("text-labels").value.trim(), contrast: $("text-contrast").value.trim(), methods: methods.join(",") };
  for (const [k, v] of Object.entries(fields)) if (v) form.append(k, v);
  showError("");
  $("text-run").disabled = true;
  $("text-status").textContent = "explaining… (the text model loads on first use)";
  try {
    const res = await api("/api/explain-text", form);
    const box = $("text-results");
    box.replaceChildren();
    if (res.task === "zero-shot") {
      const scores = Object.entries(res.logits).map(([k, v]) => `${k} ${v.toFixed(3)}`).join(", ");
      box.append(el("p", { className: "readout", textContent: `predicted label: ${res.predicted} (cosines: ${scores})` }));
    }
    for (const m of res.methods) {
      const readout = el("div", { className: "readout", textContent: "hover a word to read its score" });
      const card = el("div", { className: "text-result" }, el("h3", { textContent: m.title }),
        legendNode(m.name, m.signed, res.target.label, res.contrast), renderWords(res.text, m.words, readout));
      card.dataset.method = m.name;
      if (m.against_words) {
        card.append(el("div", { className: "hint", textContent: "the other text, explained the other way:" }),
          renderWords(res.against, m.against_words, readout));
      }
      card.append(readout);
      box.append(card);
    }
    $("text-explained").hidden = false;
    drawColorbar($("text-colorbar"));
    $("text-status").textContent = "";
  } catch (err) {
    $("text-status").textContent = "";
    showError(err.message);
  } finally {
    $("text-run").disabled = false;
  }
}

// ---------------------------------------------------------------- jobs (rewriting, transfer)
function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

// Start a job, follow its server-sent events, resolve with its result (reject on failure or cancel).
async function runJob(kind, extra, prefix) {
  const progress = $(`${prefix}-progress`), status = $(`${prefix}-status`), cancel = $(`${prefix}-cancel`);
  const run = $(`${prefix}-run`);
  showError("");
  run.disabled = true;
  const started = await withImage(`/api/jobs/${kind}`, extra).catch((err) => { run.disabled = false; throw err; });
  progress.hidden = false;
  progress.value = 0;
  cancel.hidden = false;
  cancel.onclick = () => fetch(started.status_url, { method: "DELETE" });
  const finish = () => { progress.hidden = true; cancel.hidden = true; run.disabled = false; };
  return new Promise((resolve, reject) => {
    const events = new EventSource(started.events_url);
    events.addEventListener("progress", (ev) => {
      const d = JSON.parse(ev.data);
      progress.value = d.progress;
      status.textContent = d.message;
    });
    events.addEventListener("end", (ev) => {
      events.close();
      finish();
      const d = JSON.parse(ev.data);
      status.textContent = d.status === "done" ? "" : d.status;
      if (d.status === "done") resolve(d.result);
      else reject(new Error(d.error || `the job was ${d.status}`));
    });
    events.onerror = () => { events.close(); finish(); reject(new Error("lost the connection to the job")); };
  });
}

function figure(src, caption) {
  return el("figure", {}, el("img", { src, alt: caption }), el("figcaption", { textContent: caption }));
}

function fmtPred(p) { return `${p.label} ${(100 * p.probability).toFixed(1)} % (logit ${p.logit.toFixed(3)})`; }

async function rewrite() {
  const to = $("rewrite-to").value.trim();
  if (!to) { showError("choose the class to rewrite to"); return; }
  try {
    const res = await runJob("rewrite", { to }, "rewrite");
    const n = res.numbers;
    const rows = [
      ["classes", `${n.from} → ${n.to}`], ["reached", `${n.success ? "yes" : "no"} after ${n.steps} steps`],
      ["before (top-1)", fmtPred(n.before_top5[0])], ["after (top-1)", fmtPred(n.after_top5[0])],
      ["L-inf (0..255)", n.linf_255], ["L2", n.l2.toFixed(3)], ["PSNR", `${n.psnr_db.toFixed(2)} dB`], ["SSIM", n.ssim.toFixed(4)],
    ];
    const table = el("table", { className: "numbers" }, ...rows.map(([k, v]) => el("tr", {}, el("th", { textContent: k }), el("td", { textContent: String(v) }))));
    const pictures = el("div", { className: "pictures" },
      figure(res.original, "before"), figure(res.rewritten, "after (saved as 8-bit PNG)"), figure(res.difference, "change, amplified"));
    const maps = el("div", { className: "pictures" },
      ...res.maps.map((m) => figure(m.overlay, `complete: ${m.class} on ${m.image} (logit ${m.logit.toFixed(2)})`)));
    $("rewrite-result").replaceChildren(table, pictures, maps);
  } catch (err) { showError(`class rewriting: ${err.message}`); }
}

async function transfer() {
  const target = state.target !== null ? String(state.target) : "";
  const opposing = $("contrast").value.trim();
  try {
    const res = await runJob("transfer", { target, opposing, steps: $("transfer-steps").value }, "transfer");
    const img = el("img", { alt: "attention transfer frame" });
    const caption = el("div", { className: "readout" });
    const slider = el("input", { type: "range", min: 0, max: res.frames.length - 1, value: 0 });
    const play = el("button", { type: "button", textContent: "pause" });
    const show = (i) => {
      const f = res.frames[i];
      img.src = f.overlay;
      slider.value = i;
      caption.textContent = `step ${f.step}: ${res.target} logit ${f.target_logit.toFixed(2)}, ` +
        `${res.opposing} logit ${f.opposing_logit.toFixed(2)}, positive share on ${res.opposing} ${f.opposing_share.toFixed(2)}`;
    };
    let frame = 0;
    const animate = (on) => {
      clearInterval(state.transferTimer);
      state.transferTimer = on ? setInterval(() => { frame = (frame + 1) % res.frames.length; show(frame); }, 300) : null;
      play.textContent = on ? "pause" : "play";
    };
    slider.addEventListener("input", () => { animate(false); frame = Number(slider.value); show(frame); });
    play.addEventListener("click", () => animate(!state.transferTimer));
    show(0);
    animate(true);
    const player = el("div", { className: "player" },
      el("div", {}, img, el("div", {}, slider), play),
      el("div", {}, figure(res.opposing_overlay, `step 0: complete map of ${res.opposing}`), caption));
    $("transfer-result").replaceChildren(player);
  } catch (err) { showError(`attention transfer: ${err.message}`); }
}

// ---------------------------------------------------------------- start
async function start() {
  try {
    const [info, samples, classes] = await Promise.all([api("/api/info"), api("/api/samples"), api("/api/classes")]);
    state.info = info;
    state.methodInfo = Object.fromEntries((info.method_details || []).map((m) => [m.name, m]));
    $("model-name").textContent = info.model;
    for (const m of info.methods) {
      const label = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.value = m;
      box.checked = info.default_methods.includes(m);
      box.addEventListener("change", explain);
      label.append(box, m);
      label.title = legendText(m);
      label.dataset.signed = String(isSigned(m));
      $("methods").append(label);
    }
    for (const l of info.losses) {
      const opt = document.createElement("option");
      opt.value = l;
      opt.textContent = l;
      $("loss").append(opt);
    }
    for (const c of classes.classes) {
      const opt = document.createElement("option");
      opt.value = c.label;
      $("class-list").append(opt);
    }
    for (const s of samples.samples) {
      const btn = document.createElement("button");
      btn.dataset.sample = s.id;
      btn.title = s.title;
      btn.setAttribute("aria-pressed", "false");
      const img = document.createElement("img");
      img.src = s.url;
      img.alt = s.title;
      btn.append(img, s.title);
      btn.addEventListener("click", () => chooseImage({ sample: s.id }, s.url, s.title));
      $("gallery").append(btn);
      $("guide").append(el("option", { value: s.id, textContent: s.title }));
    }
  } catch (err) {
    showError(`could not load the explorer: ${err.message}`);
  }
  $("upload").addEventListener("change", (ev) => {
    const file = ev.target.files[0];
    if (file) chooseImage({ file }, URL.createObjectURL(file), file.name);
  });
  $("contrast").addEventListener("change", explain);
  $("loss").addEventListener("change", explain);
  $("guide").addEventListener("change", explain);
  $("rewrite-run").addEventListener("click", rewrite);
  $("transfer-run").addEventListener("click", transfer);
  $("tab-images").addEventListener("click", () => showTab("images"));
  $("tab-text").addEventListener("click", () => showTab("text"));
  $("text-form").addEventListener("submit", explainText);
  if (typeof startLM === "function") await startLM();  // the Language model tab (lm.js)
  if (typeof startVLM === "function") await startVLM();  // the Vision-language tab (vlm.js)
  document.body.dataset.ready = "true";
}

start();
