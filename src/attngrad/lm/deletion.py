"""Token-deletion faithfulness test of causal-LM explanations (``attngrad evaluate lm-deletion``).

For each prompt and method, the prompt tokens are removed in order of score -- ``most`` (highest
score first) and ``least`` (lowest first) -- at 0 %, 10 %, ..., 100 % of the ranked tokens, and the
log-probability of the target token after the shortened prompt is recorded. The area under that
curve (trapezoid over the fractions) summarises it: a faithful map gives a low ``most`` AUC and a
high ``least`` AUC; ``random`` is the floor. It is the deletion side of the perturbation tests of
Chefer et al. 2021 (positive / negative perturbation) and Petsiuk et al. 2018, on text: removed
tokens are dropped, not masked, so the model sees a shorter, well-formed prompt.

``skip_first`` keeps the first token (the attention sink, issue 13) out of the ranking: it is never
removed. Every run also reports the share of the absolute score mass the first token takes.

Batched: one forward + backward per batch of prompts serves all methods
(:meth:`LMExplainer.explain_methods`); the shortened prompts of the batch, deduplicated, go through
the model left-padded with an attention mask and per-prompt position ids
(:meth:`LMAdapter.batch`), ``eval_batch_size`` at a time, without gradients.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..errors import AttngradError
from ..evaluation.resumable import check_settings, compute_batches, new_paths
from .attribution import check_methods, check_test_loss
from .explainer import LMExplainer
from .prompts import Prompt

#: Fractions of the ranked prompt tokens removed.
FRACTIONS = tuple(k / 10 for k in range(11))
DIRECTIONS = ("most", "least")


@dataclass
class DeletionSettings:
    """What a run measures; stored in ``settings.json`` and checked again by ``--resume``."""

    methods: list[str]
    loss: str = "logit"
    contrast: str | None = None
    skip_first: bool = False
    batch_size: int = 8
    model: str = "SmolLM2-135M-Instruct"

    def check(self) -> None:
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise AttngradError(f"--batch-size must be at least 1, not {self.batch_size}")
        self.methods = check_methods(self.methods)
        self.contrast = check_test_loss(self.loss, self.contrast)


def deletion_order(scores: torch.Tensor, *, skip_first: bool = False) -> list[int]:
    """Positions of a prompt's tokens, highest score first (ties: earlier position first);
    the first position left out with ``skip_first``."""
    start = 1 if skip_first and len(scores) > 1 else 0
    values = scores[start:].tolist()
    return [start + i for i in sorted(range(len(values)), key=lambda i: (-values[i], i))]


def deleted_sequences(ids: Sequence[int], order: Sequence[int], *, fill: int,
                      fractions: Sequence[float] = FRACTIONS) -> list[tuple[int, ...]]:
    """The prompt with the first ``round(f * len(order))`` positions of ``order`` removed, per fraction
    ``f``; an empty prompt becomes ``(fill,)`` (the tokenizer's BOS / EOS token)."""
    out = []
    for f in fractions:
        gone = set(order[: int(f * len(order) + 0.5)])
        kept = tuple(int(t) for j, t in enumerate(ids) if j not in gone)
        out.append(kept or (fill,))
    return out


def fill_token(explainer: LMExplainer) -> int:
    tok = explainer.adapter.tokenizer
    for value in (tok.bos_token_id, tok.eos_token_id, explainer.adapter.pad_id):
        if value is not None:
            return int(value)
    return 0


def log_probs(explainer: LMExplainer, sequences: Sequence[tuple[int, ...]], targets: Sequence[int], *,
              batch_size: int = 64) -> list[float]:
    """log p(target | sequence) for each pair, identical pairs computed once, ``batch_size`` per forward."""
    keys = list(dict.fromkeys(zip(sequences, targets)))
    # similar lengths together: less padding
    keys.sort(key=lambda k: len(k[0]))
    values: dict = {}
    adapter = explainer.adapter
    with torch.no_grad():
        for start in range(0, len(keys), batch_size):
            chunk = keys[start : start + batch_size]
            batch = adapter.batch([s for s, _ in chunk])
            logits = adapter.forward(batch, attentions=False).logits
            tgt = torch.tensor([t for _, t in chunk], device=logits.device)
            lp = logits.float().log_softmax(-1).gather(1, tgt[:, None])[:, 0]
            values.update(zip(chunk, lp.tolist()))
    return [values[k] for k in zip(sequences, targets)]


def target_id(explainer: LMExplainer, prompt: Prompt) -> int:
    ids = explainer.adapter.word_ids(prompt.target)
    if not ids:
        raise AttngradError(f"target {prompt.target!r} has no tokens")
    return int(ids[0])


def token_curves(explainer: LMExplainer, prompts: Sequence[Prompt], settings: DeletionSettings,
                 perturb: Callable[[Sequence[int], Sequence[int]], list[tuple[int, ...]]], *,
                 eval_batch_size: int = 64) -> dict:
    """The curves of a token test (deletion, insertion) for one batch of prompts (one explanation pass).

    ``perturb(ids, ranked)`` gives a prompt's perturbed sequences, one per fraction, for its token ids and
    its positions in the order of a direction (``most``: highest score first; ``least``: the reverse).
    Returns ``{"curves": {method: {direction: [[log p per fraction] per prompt]}}, "sink": {method:
    [first token's share of |scores| per prompt]}, "lengths": [...], "kinds": [...]}``.
    """
    targets = [target_id(explainer, p) for p in prompts]
    results = explainer.explain_methods([p.text for p in prompts], settings.methods, target=targets,
                                        contrast=settings.contrast, loss=settings.loss)
    sequences, seq_targets, slots = [], [], []
    sink: dict[str, list[float]] = {}
    for name, res in results.items():
        sink[name] = []
        for i in range(len(prompts)):
            scores = res.scores(i).detach().float().cpu()
            total = float(scores.abs().sum())
            sink[name].append(float(scores[0].abs()) / total if total > 0 else 0.0)
            order = deletion_order(scores, skip_first=settings.skip_first)
            ids = res.batch.ids(i)
            for direction, ranked in (("most", order), ("least", order[::-1])):
                seqs = perturb(ids, ranked)
                sequences += seqs
                seq_targets += [targets[i]] * len(seqs)
                slots.append((name, direction, i))
    lp = log_probs(explainer, sequences, seq_targets, batch_size=eval_batch_size)
    steps = len(FRACTIONS)
    curves: dict = {name: {d: [None] * len(prompts) for d in DIRECTIONS} for name in results}
    for k, (name, direction, i) in enumerate(slots):
        curves[name][direction][i] = lp[k * steps : (k + 1) * steps]
    lengths = [len(results[settings.methods[0]].batch.ids(i)) for i in range(len(prompts))]
    return {"curves": curves, "sink": sink, "lengths": lengths, "kinds": [p.kind for p in prompts]}


def evaluate_batch(explainer: LMExplainer, prompts: Sequence[Prompt], settings: DeletionSettings, *,
                   eval_batch_size: int = 64) -> dict:
    """Deletion curves of every method and direction for one batch of prompts (:func:`token_curves`)."""
    fill = fill_token(explainer)
    return token_curves(explainer, prompts, settings, lambda ids, ranked: deleted_sequences(ids, ranked, fill=fill),
                        eval_batch_size=eval_batch_size)


def auc(curve: Sequence[float], fractions: Sequence[float] = FRACTIONS) -> float:
    """Trapezoid area under ``curve`` over ``fractions``."""
    return float(np.trapezoid(curve, x=fractions))


# ---------------------------------------------------------------------------- runs


def _write_json(path: Path, data) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _digest(data: dict) -> str:
    """SHA-256 of a shard's content (its ``digest`` field left out), written with it and checked on resume."""
    body = {k: v for k, v in data.items() if k != "digest"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _shard_problem(shard: Path, chunk: Sequence[Prompt], settings: DeletionSettings) -> str | None:
    """Why a stored shard cannot be used (unreadable, edited, another batch, wrong shape), or ``None``."""
    try:
        data = json.loads(shard.read_text())
    except (OSError, ValueError) as err:
        return f"unreadable ({type(err).__name__})"
    if not isinstance(data, dict) or data.get("digest") != _digest(data):
        return "its content does not match its digest (edited or damaged)"
    if data.get("prompts") != [p.text for p in chunk]:
        return "it holds other prompts"
    try:
        for name in settings.methods:
            for d in DIRECTIONS:
                curves = data["curves"][name][d]
                if len(curves) != len(chunk) or any(len(c) != len(FRACTIONS) for c in curves):
                    return "its curves have the wrong shape"
                if not all(np.isfinite(v) and v <= 0 for c in curves for v in c):
                    return "its log-probabilities are not finite and <= 0"
            if len(data["sink"][name]) != len(chunk):
                return "its first-token shares have the wrong shape"
        if len(data["kinds"]) != len(chunk):
            return "its prompt kinds have the wrong shape"
    except (KeyError, TypeError):
        return "a field is missing"
    return None


def check_out(out: str | Path, settings: DeletionSettings, *, resume: bool = False) -> Path:
    """Check the settings and the results folder (a new run, or ``resume`` of the same settings); writes nothing."""
    settings.check()
    out = Path(out)
    check_settings(out / "settings.json", asdict(settings), resume=resume)
    return out


def run_deletion(explainer: LMExplainer, prompts: Sequence[Prompt], out: str | Path, settings: DeletionSettings, *,
                 resume: bool = False, eval_batch_size: int = 64,
                 progress: Callable[[int, int], None] | None = None) -> dict:
    """Run (or continue with ``resume``) the deletion test; per-batch results in ``out/shards``,
    summary in ``results.json`` / ``results.md`` / ``curves.csv``. Returns the summary."""
    out = run_shards(explainer, prompts, out, settings, evaluate_batch, resume=resume, eval_batch_size=eval_batch_size,
                     progress=progress)
    return summarise(out, settings, count=len(prompts))


def run_shards(explainer: LMExplainer, prompts: Sequence[Prompt], out: str | Path, settings: DeletionSettings,
               evaluate: Callable[..., dict], *, resume: bool = False, eval_batch_size: int = 64,
               progress: Callable[[int, int], None] | None = None) -> Path:
    """The per-batch shards of a token test (deletion, insertion), each written with the SHA-256 of its
    content and checked on resume (an unusable shard is named and recomputed); a run refused or stopped
    before its first shard leaves nothing behind. Returns the results folder."""
    out = check_out(out, settings, resume=resume)
    created = new_paths(out, out / "shards", out / "settings.json")
    (out / "shards").mkdir(parents=True, exist_ok=True)
    _write_json(out / "settings.json", asdict(settings))
    bs = settings.batch_size
    nb = (len(prompts) + bs - 1) // bs

    def shard(b: int) -> Path:
        return out / "shards" / f"batch_{b:05d}.json"

    def usable(b: int) -> bool:
        if not shard(b).exists():
            return False
        problem = _shard_problem(shard(b), prompts[b * bs : (b + 1) * bs], settings)
        if problem is not None:
            print(f"attngrad: warning: {shard(b)} cannot be used ({problem}); recomputing it", file=sys.stderr)
        return problem is None

    def compute(b: int, _: object) -> None:
        chunk = list(prompts[b * bs : (b + 1) * bs])
        data = evaluate(explainer, chunk, settings, eval_batch_size=eval_batch_size)
        data["prompts"] = [p.text for p in chunk]
        data["targets"] = [p.target for p in chunk]
        data["digest"] = _digest(data)
        _write_json(shard(b), data)
        if progress is not None:
            progress(b + 1, nb)

    compute_batches([b for b in range(nb) if not usable(b)], compute, created=created, progress=False)
    return out


def mean_table(out: Path, settings: DeletionSettings, *, count: int, better: str) -> dict:
    """Per method, over the first ``count`` prompts: mean AUC per direction (and per prompt kind), mean curves,
    ``gap`` (the ``better`` direction's AUC less the other's) and the first token's share of the scores."""
    bs = settings.batch_size
    shards = [json.loads((out / "shards" / f"batch_{b:05d}.json").read_text()) for b in range((count + bs - 1) // bs)]
    kinds = [k for s in shards for k in s["kinds"]][:count]
    table: dict = {}
    for name in settings.methods:
        row: dict = {}
        for d in DIRECTIONS:
            curves = [c for s in shards for c in s["curves"][name][d]][:count]
            row[f"auc_{d}"] = sum(auc(c) for c in curves) / len(curves)
            row[f"curve_{d}"] = [sum(c[k] for c in curves) / len(curves) for k in range(len(FRACTIONS))]
            for kind in sorted(set(kinds)):
                sel = [auc(c) for c, k in zip(curves, kinds) if k == kind]
                row[f"auc_{d}_{kind}"] = sum(sel) / len(sel)
        worse = next(d for d in DIRECTIONS if d != better)
        row["gap"] = row[f"auc_{better}"] - row[f"auc_{worse}"]
        shares = [v for s in shards for v in s["sink"][name]][:count]
        row["first_token_share"] = sum(shares) / len(shares)
        table[name] = row
    return table


def write_curves(out: Path, table: dict) -> None:
    """``curves.csv``: the mean curve of every method and direction."""
    lines = ["method,direction," + ",".join(f"{f:.1f}" for f in FRACTIONS)]
    for name, row in table.items():
        for d in DIRECTIONS:
            lines.append(f"{name},{d}," + ",".join(f"{v:.4f}" for v in row[f"curve_{d}"]))
    (out / "curves.csv").write_text("\n".join(lines) + "\n")


def summarise(out: Path, settings: DeletionSettings, *, count: int) -> dict:
    """Mean AUC per method and direction, mean curves and the first token's share over the first ``count`` prompts."""
    table = mean_table(out, settings, count=count, better="least")
    summary = {"settings": asdict(settings), "prompts": count, "fractions": list(FRACTIONS), "methods": table}
    _write_json(out / "results.json", summary)
    (out / "results.md").write_text(results_markdown(summary))
    write_curves(out, table)
    return summary


def results_markdown(summary: dict) -> str:
    s = summary["settings"]
    head = (f"Deletion test, {summary['prompts']} prompts, loss {s['loss']}"
            + (f" against {s['contrast']}" if s["contrast"] else "")
            + (", first token never removed" if s["skip_first"] else "") + f", model {s['model']}.\n"
            "AUC of the target's log-probability over 0-100 % of the ranked tokens removed: "
            "most-first (lower is better), least-first (higher is better), gap = least - most.\n\n")
    rows = ["| method | AUC most first (lower better) | AUC least first (higher better) | gap | first token's share of abs. score |",
            "|---|---|---|---|---|"]
    order = sorted(summary["methods"].items(), key=lambda kv: -kv[1]["gap"])
    for name, r in order:
        rows.append(f"| {name} | {r['auc_most']:.3f} | {r['auc_least']:.3f} | {r['gap']:.3f} | {r['first_token_share']:.2f} |")
    return head + "\n".join(rows) + "\n"
