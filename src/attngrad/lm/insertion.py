"""Token-insertion faithfulness test of causal-LM explanations (``attngrad evaluate lm-insertion``).

The other direction of :mod:`attngrad.lm.deletion`, on the same prompts and settings: start from a
*neutral* prompt of the same length -- every token replaced by the neutral token, the id of a single
space (``" "``) when the tokenizer spells it as one token, else its pad token -- and restore the
original tokens at their own positions, ``most`` relevant first (or ``least`` first), 0 %, 10 %, ...,
100 % of the ranked tokens; the target token's log-probability after each prompt is recorded. A
faithful map gives a high ``most`` AUC and a low ``least`` AUC (gap = most - least, higher better).
With ``skip_first`` the first token is never neutralised (it is there from the start).

Same files as ``lm-deletion`` (settings.json, shards/, results.json, results.md, curves.csv), and one
explanation pass per batch of prompts for every method; restored prompts go through the model
deduplicated, ``eval_batch_size`` per forward pass, without gradients.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

from .deletion import DIRECTIONS, FRACTIONS, DeletionSettings, _write_json, auc, deletion_order, log_probs, run_shards, target_id
from .explainer import LMExplainer
from .prompts import Prompt


def neutral_token(explainer: LMExplainer) -> int:
    """The id of ``" "`` when it is one token, else the pad token's id."""
    space = explainer.adapter.word_ids(" ")
    return int(space[0]) if len(space) == 1 else int(explainer.adapter.pad_id)


def inserted_sequences(ids: Sequence[int], order: Sequence[int], *, neutral: int, keep: Sequence[int] = (),
                       fractions: Sequence[float] = FRACTIONS) -> list[tuple[int, ...]]:
    """Per fraction ``f``: every position ``neutral`` except the first ``round(f * len(order))`` of
    ``order`` and those in ``keep``, which hold their own token."""
    out = []
    for f in fractions:
        shown = set(order[: int(f * len(order) + 0.5)]) | set(keep)
        out.append(tuple(int(t) if j in shown else neutral for j, t in enumerate(ids)))
    return out


def evaluate_batch(explainer: LMExplainer, prompts: Sequence[Prompt], settings: DeletionSettings, *,
                   eval_batch_size: int = 64) -> dict:
    """Insertion curves of every method and direction for one batch of prompts (one explanation pass);
    the layout of :func:`attngrad.lm.deletion.evaluate_batch` (``curves``, ``sink``, ``lengths``, ``kinds``)."""
    targets = [target_id(explainer, p) for p in prompts]
    results = explainer.explain_methods([p.text for p in prompts], settings.methods, target=targets,
                                        contrast=settings.contrast, loss=settings.loss)
    neutral = neutral_token(explainer)
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
            keep = [0] if settings.skip_first and len(ids) > 1 else []
            for direction, ranked in (("most", order), ("least", order[::-1])):
                seqs = inserted_sequences(ids, ranked, neutral=neutral, keep=keep)
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


def run_insertion(explainer: LMExplainer, prompts: Sequence[Prompt], out: str | Path, settings: DeletionSettings, *,
                  resume: bool = False, eval_batch_size: int = 64,
                  progress: Callable[[int, int], None] | None = None) -> dict:
    """Run (or continue with ``resume``) the insertion test; the files of ``lm-deletion``, with the same
    shard integrity rules (:func:`attngrad.lm.deletion.run_shards`). Returns the summary."""
    out = run_shards(explainer, prompts, out, settings, evaluate_batch, resume=resume, eval_batch_size=eval_batch_size,
                     progress=progress)
    return summarise(Path(out), settings, count=len(prompts), neutral=neutral_token(explainer))


def summarise(out: Path, settings: DeletionSettings, *, count: int, neutral: int) -> dict:
    """Mean AUC per method and direction (and per prompt kind), mean curves, gap = most - least."""
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
        row["gap"] = row["auc_most"] - row["auc_least"]
        shares = [v for s in shards for v in s["sink"][name]][:count]
        row["first_token_share"] = sum(shares) / len(shares)
        table[name] = row
    summary = {"settings": asdict(settings), "prompts": count, "fractions": list(FRACTIONS), "neutral_token": neutral,
               "methods": table}
    _write_json(out / "results.json", summary)
    s = settings
    head = (f"Insertion test, {count} prompts, loss {s.loss}" + (f" against {s.contrast}" if s.contrast else "")
            + (", first token always shown" if s.skip_first else "") + f", model {s.model}, neutral token id {neutral}.\n"
            "AUC of the target's log-probability over 0-100 % of the ranked tokens restored into the neutral prompt: "
            "most-first (higher is better), least-first (lower is better), gap = most - least.\n\n")
    rows = ["| method | AUC most first (higher better) | AUC least first (lower better) | gap | first token's share of abs. score |",
            "|---|---|---|---|---|"]
    for name, r in sorted(table.items(), key=lambda kv: -kv[1]["gap"]):
        rows.append(f"| {name} | {r['auc_most']:.3f} | {r['auc_least']:.3f} | {r['gap']:.3f} | {r['first_token_share']:.2f} |")
    (out / "results.md").write_text(head + "\n".join(rows) + "\n")
    lines = ["method,direction," + ",".join(f"{f:.1f}" for f in FRACTIONS)]
    for name, row in table.items():
        for d in DIRECTIONS:
            lines.append(f"{name},{d}," + ",".join(f"{v:.4f}" for v in row[f"curve_{d}"]))
    (out / "curves.csv").write_text("\n".join(lines) + "\n")
    return summary
