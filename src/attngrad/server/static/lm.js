// attngrad explorer, Language model tab: plain JavaScript over /api/lm/* (helpers from app.js:
// $, api, el, showError, colourOf, drawColorbar, legendNode, showTab).
"use strict";

const lmState = { info: null };
const GREY = [221, 221, 221];  // a hidden first token (attngrad.lm.display)

// A token as shown: newlines visible, an empty token as ∅ (as attngrad.lm.display does).
function visibleToken(text) {
  const shown = text.replace(/\n/g, "\\n");
  return shown.length ? shown : "∅";
}

function fmtToken(t) { return `“${visibleToken(t)}”`; }

// The prompt's tokens, each on its colour (S / max|S|, grey when hidden); hover shows the raw score.
function renderTokens(tokens, readout, next) {
  const box = el("p", { className: "words lm-tokens" });
  for (const t of tokens) {
    const [r, g, b] = t.normalized === null ? GREY : colourOf(t.normalized);
    const ink = 0.299 * r + 0.587 * g + 0.114 * b > 140 ? "#000" : "#fff";
    const span = el("span", { className: "word token", textContent: visibleToken(t.text) });
    span.dataset.normalized = t.normalized === null ? "" : String(t.normalized);
    span.dataset.score = String(t.score);
    span.style.background = `rgb(${r}, ${g}, ${b})`;
    span.style.color = ink;
    const norm = t.normalized === null ? "hidden from the colours" : `S/max|S| = ${t.normalized.toFixed(3)}`;
    span.title = `score ${t.score.toExponential(3)} (${norm})`;
    span.addEventListener("mouseenter", () => {
      readout.textContent = `${fmtToken(t.text)}: S = ${t.score.toExponential(3)}, ${norm}`;
    });
    box.append(span);
  }
  if (next !== undefined) box.append(" → ", el("b", { textContent: visibleToken(next) }));
  return box;
}

function lmNotes(notes) {
  return notes.map((n) => el("p", { className: "hint lm-note", textContent: `note: ${n}` }));
}

function renderExplanation(res) {
  const box = $("lm-results");
  const target = `${fmtToken(res.target.text)} (p = ${res.target.probability.toFixed(3)})`;
  const vs = res.contrast ? ` rather than ${fmtToken(res.contrast.text)} (p = ${res.contrast.probability.toFixed(3)})` : "";
  const next = res.next_tokens.map((t) => `${fmtToken(t.text)} ${t.probability.toFixed(3)}`).join(", ");
  box.replaceChildren(
    el("h3", { textContent: `Explaining the next token ${target}${vs}, loss ${res.loss}` }),
    el("p", { className: "readout", textContent: `most likely next tokens: ${next}` }),
    ...lmNotes(res.notes),
  );
  for (const m of res.methods) {
    const readout = el("div", { className: "readout", textContent: "hover a token to read its score" });
    const card = el("div", { className: "text-result lm-result" }, el("h3", { textContent: m.title }),
      legendNode(m.name, m.signed, fmtToken(res.target.text), res.contrast && fmtToken(res.contrast.text)),
      renderTokens(m.tokens, readout, res.target.text), readout);
    card.dataset.method = m.name;
    box.append(card);
  }
}

// Generation: the continuation with each generated token clickable (its map over every earlier
// token below), and the whole generated x earlier-token matrix (click a row).
function renderGeneration(res) {
  const box = $("lm-results");
  const readout = el("div", { className: "readout", textContent: "hover a token to read its score" });
  const mapBox = el("div", { className: "lm-step" });
  const text = el("p", { className: "words lm-generated" }, res.prompt);
  const table = el("table", { className: "lm-matrix" });
  const width = res.prompt_tokens.length + res.generated.length - 1;
  const all = [...res.prompt_tokens, ...res.generated];
  table.append(el("tr", {}, el("th"), ...all.slice(0, width).map((t) => el("th", { className: "col", textContent: visibleToken(t) }))));
  const show = (k) => {
    const step = res.steps[k];
    mapBox.replaceChildren(
      el("p", { className: "hint", textContent: `generated token ${k + 1}: ${fmtToken(step.token)} (p = ${step.probability.toFixed(3)})` }),
      renderTokens(step.tokens, readout, step.token));
    mapBox.dataset.step = String(k);
    box.querySelectorAll("[data-k]").forEach((e) => e.classList.toggle("sel", Number(e.dataset.k) === k));
  };
  res.steps.forEach((step, k) => {
    const tok = el("b", { className: "gen-token", textContent: visibleToken(step.token) });
    tok.dataset.k = String(k);
    tok.addEventListener("click", () => show(k));
    text.append(tok);
    const row = el("tr", {}, el("th", { textContent: visibleToken(step.token) }));
    row.dataset.k = String(k);
    row.addEventListener("click", () => show(k));
    for (let j = 0; j < width; j++) {
      const cell = el("td");
      const t = step.tokens[j];
      if (t) {
        const [r, g, b] = t.normalized === null ? GREY : colourOf(t.normalized);
        cell.style.background = `rgb(${r}, ${g}, ${b})`;
        cell.title = `${visibleToken(t.text)}: ${t.score.toExponential(3)}`;
      }
      row.append(cell);
    }
    table.append(row);
  });
  const card = el("div", { className: "text-result lm-result" },
    el("h3", { textContent: `${res.method}, ${res.loss} of each generated token` }),
    legendNode(res.method, res.signed, "the generated token",
      res.contrast && (res.contrast.trim().toLowerCase() === "runner-up" ? "the runner-up" : fmtToken(res.contrast))), text,
    el("p", { className: "hint", textContent: "Click a generated token (or a row of the matrix) to see its map over every earlier token." }),
    mapBox, readout, table);
  card.dataset.method = res.method;
  box.replaceChildren(...lmNotes(res.notes), card);
  if (res.steps.length) show(0);
}

async function explainLM(ev) {
  ev.preventDefault();
  const methods = [...document.querySelectorAll("#lm-methods input:checked")].map((i) => i.value);
  if (!methods.length) { showError("choose at least one method"); return; }
  const generate = $("lm-generate").checked;
  const fields = { prompt: $("lm-prompt").value, contrast: $("lm-contrast").value, loss: $("lm-loss").value,
    hide_first: String($("lm-hide-first").checked) };
  if (generate) Object.assign(fields, { method: methods[0], max_new_tokens: $("lm-new-tokens").value });
  else Object.assign(fields, { target: $("lm-target").value, methods: methods.join(",") });
  const form = new FormData();
  for (const [k, v] of Object.entries(fields)) if (v) form.append(k, v);
  showError("");
  $("lm-run").disabled = true;
  $("lm-status").textContent = generate ? "generating and explaining…" : "explaining…";
  if (!lmState.info.loaded) $("lm-status").textContent += " (the language model loads on first use)";
  try {
    const res = await api(generate ? "/api/lm/generate" : "/api/lm/explain", form);
    lmState.info.loaded = true;
    if (generate) renderGeneration(res); else renderExplanation(res);
    $("lm-explained").hidden = false;
    drawColorbar($("lm-colorbar"));
    $("lm-status").textContent = "";
  } catch (err) {
    $("lm-status").textContent = "";
    showError(err.message);
  } finally {
    $("lm-run").disabled = false;
  }
}

// Called by app.js's start(): show the tab when the language model is available, else say why.
async function startLM() {
  let info;
  try {
    info = await api("/api/lm/info");
  } catch (err) {
    info = { available: false, reason: err.message };
  }
  lmState.info = info;
  if (!info.available) {
    $("tab-lm").hidden = true;
    $("lm-off").textContent = `Language model tab hidden: ${info.reason}`;
    $("lm-off").hidden = false;
    return;
  }
  $("lm-model-name").textContent = info.model;
  for (const m of info.method_details) {
    const box = el("input", { type: "checkbox", value: m.name, checked: info.default_methods.includes(m.name) });
    const label = el("label", { title: m.legend }, box, m.name);
    label.dataset.signed = String(m.signed);
    $("lm-methods").append(label);
  }
  for (const l of info.losses) $("lm-loss").append(el("option", { value: l, textContent: l }));
  $("lm-new-tokens").max = String(info.max_new_tokens);
  $("lm-target").disabled = false;
  $("lm-generate").addEventListener("change", () => { $("lm-target").disabled = $("lm-generate").checked; });
  $("tab-lm").addEventListener("click", () => showTab("lm"));
  $("lm-form").addEventListener("submit", explainLM);
}
