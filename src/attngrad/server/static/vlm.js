// attngrad explorer, Vision-language tab: plain JavaScript over /api/vlm/* (helpers from app.js:
// $, api, el, showError, legendNode, drawColorbar, showTab; renderTokens and fmtToken from lm.js).
"use strict";

const vlmState = { info: null, source: null, imageId: null };

function vlmChoose(source, url, caption) {
  vlmState.source = source;
  vlmState.imageId = null;
  $("vlm-preview-img").src = url;
  $("vlm-preview-caption").textContent = caption;
  $("vlm-preview").hidden = false;
  document.querySelectorAll("#vlm-gallery button").forEach((b) =>
    b.setAttribute("aria-pressed", String(b.dataset.sample === source.sample)));
}

function vlmForm(fields) {
  const form = new FormData();
  if (vlmState.imageId) form.append("image_id", vlmState.imageId);
  else if (vlmState.source.sample) form.append("sample", vlmState.source.sample);
  else form.append("file", vlmState.source.file);
  for (const [k, v] of Object.entries(fields)) if (v) form.append(k, v);
  return form;
}

// One overlay card: the map on the image (hover a patch to read its value), its legend and the prompt's tokens.
function vlmCard(res, m) {
  const [gh, gw] = m.grid;
  const peak = Math.max(...m.map.flat().map(Math.abs));
  const img = el("img", { className: "overlay", alt: `${m.name} (${m.reading}) map`, src: m.overlay });
  const patch = el("div", { className: "patch-box" });
  const wrap = el("div", { className: "overlay-wrap" }, img, patch);
  const readout = el("div", { className: "readout", textContent: `max|S| = ${peak.toExponential(3)}` });
  wrap.addEventListener("mousemove", (ev) => {
    const r = wrap.getBoundingClientRect();
    const col = Math.min(gw - 1, Math.max(0, Math.floor(((ev.clientX - r.left) / r.width) * gw)));
    const row = Math.min(gh - 1, Math.max(0, Math.floor(((ev.clientY - r.top) / r.height) * gh)));
    const v = m.map[row][col];
    readout.textContent = `patch (${row}, ${col}): S = ${v.toExponential(3)}, S/max|S| = ${(peak > 0 ? v / peak : 0).toFixed(3)}`;
    Object.assign(patch.style, { display: "block", left: `${(col / gw) * 100}%`, top: `${(row / gh) * 100}%`,
      width: `${100 / gw}%`, height: `${100 / gh}%` });
  });
  wrap.addEventListener("mouseleave", () => { patch.style.display = "none"; });
  const tokenReadout = el("div", { className: "readout", textContent: "hover a token to read its score" });
  const card = el("div", { className: "result vlm-result" },
    el("h3", { textContent: `${m.name} (${m.reading})` }), wrap,
    legendNode(m.name, m.signed, fmtToken(res.target.text), res.contrast && fmtToken(res.contrast.text)), readout,
    renderTokens(m.tokens, tokenReadout, res.target.text), tokenReadout);
  card.dataset.method = m.name;
  card.dataset.reading = m.reading;
  return card;
}

function renderVLM(res) {
  const target = `${fmtToken(res.target.text)} (p = ${res.target.probability.toFixed(3)})`;
  const vs = res.contrast ? ` rather than ${fmtToken(res.contrast.text)} (p = ${res.contrast.probability.toFixed(3)})` : "";
  const next = res.next_tokens.map((t) => `${fmtToken(t.text)} ${t.probability.toFixed(3)}`).join(", ");
  const said = res.answer.trim() ? `“${res.answer}”` : `nothing readable (${res.answer_tokens.map(fmtToken).join(" ") || "no tokens"})`;
  $("vlm-answer").textContent = `The model answers (greedy): ${said}`;
  $("vlm-title").textContent = `Explaining the next token ${target}${vs}, loss ${res.loss}`;
  $("vlm-next").textContent = `most likely next tokens: ${next}`;
  $("vlm-results").replaceChildren(...res.results.map((m) => vlmCard(res, m)));
  $("vlm-explained").hidden = false;
  drawColorbar($("vlm-colorbar"));
}

async function explainVLM(ev) {
  ev.preventDefault();
  if (!vlmState.source) { showError("choose or upload an image first"); return; }
  const checked = (id) => [...document.querySelectorAll(`#${id} input:checked`)].map((i) => i.value).join(",");
  const fields = { prompt: $("vlm-prompt").value, target: $("vlm-target").value, contrast: $("vlm-contrast").value,
    loss: $("vlm-loss").value, methods: checked("vlm-methods"), readings: checked("vlm-readings") };
  if (!fields.methods || !fields.readings) { showError("choose at least one method and one reading"); return; }
  showError("");
  $("vlm-run").disabled = true;
  $("vlm-status").textContent = "explaining…" + (vlmState.info.loaded ? "" : " (the model loads on first use)");
  try {
    let res;
    try {
      res = await api("/api/vlm/explain", vlmForm(fields));
    } catch (err) {  // the server forgot our image: send it again once
      if (err.status !== 404 || !vlmState.imageId) throw err;
      vlmState.imageId = null;
      res = await api("/api/vlm/explain", vlmForm(fields));
    }
    vlmState.imageId = res.image_id;
    vlmState.info.loaded = true;
    renderVLM(res);
    $("vlm-status").textContent = "";
  } catch (err) {
    $("vlm-status").textContent = "";
    showError(err.message);
  } finally {
    $("vlm-run").disabled = false;
  }
}

// Called by app.js's start(): without a configured model the tab shows one line saying how to give one.
async function startVLM() {
  $("tab-vlm").addEventListener("click", () => showTab("vlm"));
  let info;
  try {
    info = await api("/api/vlm/info");
  } catch (err) {
    info = { available: false, reason: err.message };
  }
  vlmState.info = info;
  if (!info.available) {
    $("vlm-off").textContent = `The vision-language tab is off: ${info.reason}`;
    $("vlm-off").hidden = false;
    $("vlm-form").hidden = true;
    return;
  }
  $("vlm-model-name").textContent = info.model;
  $("vlm-prompt").value = info.default_prompt;
  for (const m of info.method_details) {
    const label = el("label", { title: m.legend },
      el("input", { type: "checkbox", value: m.name, checked: info.default_methods.includes(m.name) }), m.name);
    label.dataset.signed = String(m.signed);
    $("vlm-methods").append(label);
  }
  for (const r of info.readings) {
    $("vlm-readings").append(el("label", {},
      el("input", { type: "checkbox", value: r, checked: info.default_readings.includes(r) }), r));
  }
  for (const l of info.losses) $("vlm-loss").append(el("option", { value: l, textContent: l }));
  const samples = await api("/api/samples");
  for (const s of samples.samples) {
    const btn = el("button", { type: "button", title: s.title }, el("img", { src: s.url, alt: s.title }), s.title);
    btn.dataset.sample = s.id;
    btn.setAttribute("aria-pressed", "false");
    btn.addEventListener("click", () => vlmChoose({ sample: s.id }, s.url, s.title));
    $("vlm-gallery").append(btn);
  }
  $("vlm-upload").addEventListener("change", (ev) => {
    const file = ev.target.files[0];
    if (file) vlmChoose({ file }, URL.createObjectURL(file), file.name);
  });
  $("vlm-form").addEventListener("submit", explainVLM);
}
