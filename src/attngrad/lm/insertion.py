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

from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

from .deletion import FRACTIONS, DeletionSettings, _write_json, mean_table, run_shards, token_curves, write_curves
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
    the layout of :func:`attngrad.lm.deletion.token_curves` (``curves``, ``sink``, ``lengths``, ``kinds``)."""
    neutral = neutral_token(explainer)

    def perturb(ids: Sequence[int], ranked: Sequence[int]) -> list[tuple[int, ...]]:
        keep = [0] if settings.skip_first and len(ids) > 1 else []
        return inserted_sequences(ids, ranked, neutral=neutral, keep=keep)

    return token_curves(explainer, prompts, settings, perturb, eval_batch_size=eval_batch_size)


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
    table = mean_table(out, settings, count=count, better="most")
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
    write_curves(out, table)
    return summary
