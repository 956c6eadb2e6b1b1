"""In-context evidence test of causal-LM explanations (``attngrad evaluate lm-evidence``).

The prompts (:mod:`attngrad.lm.evidence_prompts`) hold a few facts and a question about one of them;
only those the model answers (greedy next token = the answer's first token) are kept. Each method
explains that token (``loss``, as ``explain-lm``) and is scored per prompt, over the prompt's tokens
(the first token left out with ``skip_first``) with ``s`` the scores, ``E`` the evidence tokens and
``D`` the distractor facts' tokens:

* ``evidence_share``: ``sum(max(s, 0)[E]) / sum(max(s, 0))`` (0 when nothing is positive);
* ``top1``: 1 when the highest-scored token lies in ``E`` (ties: the earlier position);
* ``topk``: the share of the ``|E|`` highest-scored tokens that lie in ``E``;
* ``distractor_negative`` (signed methods only, else NaN): ``sum(max(-s, 0)[D]) / sum(max(-s, 0))``.

``chance`` is ``|E|`` over the scored tokens: what a uniform map gives for ``evidence_share``.
Mean and 95 % interval (1.96 standard errors) per method; per kind as well.

Resumable like the other evaluations: one ``.npz`` shard per batch of prompts, holding the digest of
what it was computed from (settings, prompts, answers, spans) and a checksum of its values; a shard
whose digest or checksum does not match (tampered, from other settings, truncated) is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import zipfile
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..errors import AttngradError
from ..evaluation.resumable import check_settings
from ..evaluation.storage import DIGEST_KEY, json_safe, write_shard
from .attribution import check_methods, check_test_loss, signed
from .evidence_prompts import KINDS, EvidencePrompt, evidence_prompts, token_spans
from .explainer import LMExplainer

METRICS = ("evidence_share", "top1", "topk", "distractor_negative")


@dataclass
class EvidenceSettings:
    """What a run measures; stored in ``settings.json`` and checked again by ``--resume``."""

    methods: list[str]
    loss: str = "logit"
    contrast: str | None = None
    skip_first: bool = False
    prompts: int = 200
    candidates: int = 1000
    seed: int = 0
    batch_size: int = 8
    model: str = "SmolLM2-135M-Instruct"

    def check(self) -> None:
        for name in ("prompts", "candidates", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise AttngradError(f"--{name.replace('_', '-')} must be at least 1, not {value}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise AttngradError(f"--seed must be at least 0, not {self.seed}")
        self.methods = check_methods(self.methods)
        self.contrast = check_test_loss(self.loss, self.contrast)
        if isinstance(self.contrast, str) and self.contrast.strip().lower() in ("top1", "top-1"):
            raise AttngradError("--contrast top1 is the answer itself: a prompt is kept only when the model answers it; "
                                "use top2 or runner-up")


# ---------------------------------------------------------------------------- metrics


def prompt_metrics(scores: torch.Tensor | np.ndarray, evidence: Sequence[int], distractors: Sequence[int], *,
                   signed_method: bool, skip_first: bool = False) -> dict[str, float]:
    """The four metrics (and ``chance``) of one prompt's 1-D ``scores`` (see the module's docstring)."""
    s = torch.as_tensor(scores, dtype=torch.float64).flatten()
    keep = torch.ones(len(s), dtype=torch.bool)
    if skip_first and len(s) > 1:
        keep[0] = False
    ev = torch.zeros(len(s), dtype=torch.bool)
    ev[list(evidence)] = True
    ev &= keep
    di = torch.zeros(len(s), dtype=torch.bool)
    di[list(distractors)] = True
    di &= keep
    pos, neg = s.clamp(min=0) * keep, (-s).clamp(min=0) * keep
    total = float(pos.sum())
    share = float(pos[ev].sum()) / total if total > 0 else 0.0
    positions = keep.nonzero().flatten().tolist()
    ranked = sorted(positions, key=lambda j: (-float(s[j]), j))
    k = int(ev.sum())
    top1 = float(bool(ranked) and bool(ev[ranked[0]]))
    topk = float(ev[ranked[:k]].sum()) / k if k else 0.0
    if signed_method:
        nt = float(neg.sum())
        dneg = float(neg[di].sum()) / nt if nt > 0 else 0.0
    else:
        dneg = float("nan")
    return {"evidence_share": share, "top1": top1, "topk": topk, "distractor_negative": dneg,
            "chance": k / max(len(positions), 1)}


def answered(explainer: LMExplainer, prompts: Sequence[EvidencePrompt], *, batch_size: int = 32) -> list[bool]:
    """Whether the model's greedy next token after each prompt is its answer's first token."""
    out: list[bool] = []
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            batch = explainer.encode([p.text for p in chunk])
            pred = explainer.adapter.forward(batch, attentions=False).logits.argmax(-1).tolist()
            out += [int(t) == _target(explainer, p) for p, t in zip(chunk, pred)]
    return out


def _target(explainer: LMExplainer, prompt: EvidencePrompt) -> int:
    ids = explainer.adapter.word_ids(prompt.target)
    if not ids:
        raise AttngradError(f"answer {prompt.target!r} has no tokens")
    return int(ids[0])


def select_prompts(explainer: LMExplainer, settings: EvidenceSettings, *,
                   progress: Callable[[int, int], None] | None = None) -> tuple[list[EvidencePrompt], dict]:
    """The first ``settings.prompts`` of ``settings.candidates`` seeded prompts the model answers,
    and per kind how many were generated and kept (``{"generated": {...}, "kept": {...}}``)."""
    candidates = evidence_prompts(settings.candidates, seed=settings.seed)
    kept: list[EvidencePrompt] = []
    generated: Counter = Counter()
    step = 64
    for start in range(0, len(candidates), step):
        chunk = candidates[start : start + step]
        for p, ok in zip(chunk, answered(explainer, chunk)):
            if len(kept) < settings.prompts:
                generated[p.kind] += 1
                if ok:
                    kept.append(p)
        if progress is not None:
            progress(min(start + step, len(candidates)), len(candidates))
        if len(kept) >= settings.prompts:
            break
    counts = {"generated": {k: generated[k] for k in KINDS},
              "kept": {k: sum(p.kind == k for p in kept) for k in KINDS}}
    return kept, counts


def evaluate_batch(explainer: LMExplainer, prompts: Sequence[EvidencePrompt], settings: EvidenceSettings) -> dict[str, np.ndarray]:
    """Per method and metric, one value per prompt (``"<method>/<metric>"``), plus ``chance``: one
    explanation pass for every method."""
    targets = [_target(explainer, p) for p in prompts]
    results = explainer.explain_methods([p.text for p in prompts], settings.methods, target=targets,
                                        contrast=settings.contrast, loss=settings.loss)
    tok = explainer.adapter.tokenizer
    spans = [token_spans(tok, p.text, p.evidence + p.distractors) for p in prompts]
    arrays: dict[str, np.ndarray] = {}
    chance = []
    for name, res in results.items():
        rows = []
        for i, p in enumerate(prompts):
            evidence = [j for s in spans[i][: len(p.evidence)] for j in s]
            distractors = [j for s in spans[i][len(p.evidence) :] for j in s]
            rows.append(prompt_metrics(res.scores(i).detach().cpu(), evidence, distractors,
                                       signed_method=signed(name), skip_first=settings.skip_first))
        for metric in METRICS:
            arrays[f"{name}/{metric}"] = np.array([r[metric] for r in rows], dtype=np.float64)
        chance = [r["chance"] for r in rows]
    arrays["chance"] = np.array(chance, dtype=np.float64)
    return arrays


# ---------------------------------------------------------------------------- runs


def _digest(settings: EvidenceSettings, prompts: Sequence[EvidencePrompt]) -> str:
    text = json.dumps([asdict(settings), [asdict(p) for p in prompts]], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for key in sorted(arrays):
        if key not in ("digest", "checksum", DIGEST_KEY):
            h.update(key.encode())
            h.update(np.ascontiguousarray(arrays[key]).tobytes())
    return h.hexdigest()


def _read_shard(path: Path, digest: str) -> dict[str, np.ndarray] | None:
    """The shard's arrays when it is whole, from ``digest`` and unchanged; else ``None`` (and a note on stderr)."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as err:
        print(f"attngrad: {path} is unreadable ({type(err).__name__}); recomputing it", file=sys.stderr)
        return None
    if str(arrays.get("digest", "")) != digest:
        print(f"attngrad: {path.name} is from other prompts or settings; recomputing it", file=sys.stderr)
        return None
    if str(arrays.get("checksum", "")) != _checksum(arrays):
        print(f"attngrad: {path.name} does not match its checksum (changed after writing); recomputing it",
              file=sys.stderr)
        return None
    return arrays


def check_out(out: str | Path, settings: EvidenceSettings, *, resume: bool = False) -> Path:
    """Check the settings and the results folder (a new run, or ``resume`` of the same settings); writes nothing."""
    settings.check()
    out = Path(out)
    check_settings(out / "settings.json", asdict(settings), resume=resume)
    return out


def run_evidence(explainer: LMExplainer, out: str | Path, settings: EvidenceSettings, *, resume: bool = False,
                 progress: Callable[[int, int], None] | None = None) -> dict:
    """Select the prompts, explain them batch by batch into ``out/shards`` (skipping valid shards),
    then write ``prompts.json``, ``per_prompt.npz``, ``results.json`` and ``results.md``; returns the summary."""
    out = check_out(out, settings, resume=resume)
    prompts, counts = select_prompts(explainer, settings)
    if not prompts:
        raise AttngradError("the model answers none of the generated prompts; give more --candidates")
    fresh = not out.exists()
    try:
        return _run(explainer, out, settings, prompts, counts, progress)
    except AttngradError:  # a refused setting leaves no half-written new folder (a resumed one keeps its shards)
        if fresh:
            shutil.rmtree(out, ignore_errors=True)
        raise


def _run(explainer: LMExplainer, out: Path, settings: EvidenceSettings, prompts: list[EvidencePrompt], counts: dict,
         progress: Callable[[int, int], None] | None) -> dict:
    (out / "shards").mkdir(parents=True, exist_ok=True)
    (out / "settings.json").write_text(json.dumps(asdict(settings), indent=1))
    (out / "prompts.json").write_text(json.dumps({"counts": counts, "prompts": [asdict(p) for p in prompts]}, indent=1))
    bs = settings.batch_size
    nb = (len(prompts) + bs - 1) // bs
    parts = []
    for b in range(nb):
        chunk = prompts[b * bs : (b + 1) * bs]
        digest = _digest(settings, chunk)
        path = out / "shards" / f"batch-{b:05d}.npz"
        arrays = _read_shard(path, digest)
        if arrays is None:
            arrays = evaluate_batch(explainer, chunk, settings)
            arrays["digest"] = np.array(digest)
            arrays["checksum"] = np.array(_checksum(arrays))
            write_shard(path, arrays)
        parts.append(arrays)
        if progress is not None:
            progress(b + 1, nb)
    per_prompt = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k not in ("digest", "checksum", DIGEST_KEY)}
    per_prompt["kind"] = np.array([p.kind for p in prompts])
    write_shard(out / "per_prompt.npz", per_prompt)
    summary = summarise(per_prompt, settings, counts)
    (out / "results.json").write_text(json.dumps(json_safe(summary), indent=1, allow_nan=False))
    (out / "results.md").write_text(results_markdown(summary))
    return summary



def _mean_ci(values: np.ndarray) -> tuple[float, float]:
    v = values[~np.isnan(values)]
    if len(v) == 0:
        return float("nan"), float("nan")
    half = 1.96 * float(v.std(ddof=1)) / float(np.sqrt(len(v))) if len(v) > 1 else float("nan")
    return float(v.mean()), half


def summarise(per_prompt: dict[str, np.ndarray], settings: EvidenceSettings, counts: dict) -> dict:
    """Mean and 95 % half-interval of every metric per method, overall and per kind."""
    kinds = per_prompt["kind"]
    table: dict = {}
    for name in settings.methods:
        row: dict = {}
        for metric in METRICS:
            values = per_prompt[f"{name}/{metric}"]
            row[metric], row[f"{metric}_ci95"] = _mean_ci(values)
            for kind in KINDS:
                if (kinds == kind).any():
                    row[f"{metric}_{kind}"] = _mean_ci(values[kinds == kind])[0]
        table[name] = row
    return {"settings": asdict(settings), "prompts": int(len(kinds)), "counts": counts,
            "chance": float(per_prompt["chance"].mean()), "methods": table}


def results_markdown(summary: dict) -> str:
    s = summary["settings"]
    head = (f"Evidence test, {summary['prompts']} prompts the model answers (kept per kind: "
            + ", ".join(f"{k} {v}/{summary['counts']['generated'][k]}" for k, v in summary["counts"]["kept"].items())
            + f"), loss {s['loss']}" + (f" against {s['contrast']}" if s["contrast"] else "")
            + (", first token left out" if s["skip_first"] else "") + f", model {s['model']}. "
            f"Chance share of the evidence: {summary['chance']:.3f}. Mean +- 95 % interval.\n\n")
    rows = ["| method | evidence share | top-1 in evidence | top-k in evidence | distractors' share of negative |",
            "|---|---|---|---|---|"]

    def cell(r: dict, m: str) -> str:
        return "-" if np.isnan(r[m]) else f"{r[m]:.3f} +- {r[m + '_ci95']:.3f}"

    for name, r in sorted(summary["methods"].items(), key=lambda kv: -kv[1]["evidence_share"]):
        rows.append(f"| {name} | " + " | ".join(cell(r, m) for m in METRICS) + " |")
    return head + "\n".join(rows) + "\n"


def read_npz_per_prompt(out: str | Path) -> dict[str, np.ndarray]:
    """``per_prompt.npz`` of a finished run: ``"<method>/<metric>"``, ``chance`` and ``kind`` per prompt."""
    with np.load(Path(out) / "per_prompt.npz", allow_pickle=False) as f:
        return {k: f[k] for k in f.files}
