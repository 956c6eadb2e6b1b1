"""Word alignment as a test of encoder-decoder explanations: maps against a known answer.

For every target token of held-out sentences of the synthetic task
(:mod:`attngrad.seq2seq.synthetic`, where the source words each target word comes from are
known by construction), each method scores the source tokens; the scores are compared with
the true alignment:

- **AER** (alignment error rate, Och & Ney 2003) with sure = possible = the true links:
  ``AER = 1 - 2 |A ∩ S| / (|A| + |S|)``, summed over the corpus. The hard alignment ``A`` of a
  soft map: per target token, the ``k`` highest-scoring source tokens (``</s>`` included), with
  ``k = |gold|`` of that token (``aer``, the main number) or ``k = 1`` (``aer_top1``). A row that is
  exactly zero (or constant) links nothing.
- **pointing**: the share of target tokens whose highest-scoring source token is a true one
  (a constant row is a miss).
- for signed methods, **negative share on unrelated tokens**: of the absolute score on source
  tokens that are not true links, the share that is negative.

Methods: the cross-attention relevance rules (``complete``, ``gae``, ``absolute``, ``rollout``:
:class:`attngrad.seq2seq.Seq2SeqExplainer`, one forward and backward pass for all), the
cross-attention itself (``attention_last``: the last decoder layer's, heads averaged;
``attention_mean``: averaged over layers and heads), ``grad_x_input`` (gradient of the
explained logit with respect to the source token embeddings, times them, summed over the
hidden size; a second forward and backward pass) and ``random`` (uniform, seeded by the text
and position). What is explained: the target token's logit (default) or its log-probability
(``loss="logprob"``). Intervals: percentile bootstrap over sentences (95 %), and the paired
differences of ``complete`` against ``gae`` and the raw attention on the same resamples.
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import AttngradError
from ..losses import LossLike
from ..seq2seq.explainer import Seq2SeqExplainer
from ..seq2seq.rules import WEIGHTINGS
from ..seq2seq.synthetic import Pair

RULES = tuple(WEIGHTINGS)  # complete, gae, absolute, rollout
EXTRA = ("attention_last", "attention_mean", "grad_x_input", "random")
METHODS = RULES + EXTRA
SIGNED = {"complete", "grad_x_input"}
#: Pairs compared on the same resamples: (a, b) reports a - b.
PAIRED = (("complete", "gae"), ("complete", "attention_last"), ("complete", "attention_mean"))


@dataclass
class TokenScores:
    """Per explained target token: its sentence, position, kind, the true links and every method's source scores.

    Attributes:
        sentence, position: (N,) the pair index and the target token index.
        kinds: (N,) ``word``, ``split`` or ``agreement`` (:class:`~attngrad.seq2seq.synthetic.Pair`).
        gold: (N, S) true where the source token is a true link (S: the longest source, ``</s>`` included).
        valid: (N, S) true on real source tokens (``</s>`` included), false on padding.
        scores: method -> (N, S) float32 scores, 0 on padding.
    """

    sentence: np.ndarray
    position: np.ndarray
    kinds: np.ndarray
    gold: np.ndarray
    valid: np.ndarray
    scores: dict[str, np.ndarray]


def check_methods(methods: Sequence[str]) -> list[str]:
    """The methods, checked against :data:`METHODS`."""
    methods = list(dict.fromkeys(methods))
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise AttngradError(f"unknown method {unknown[0]!r} for the alignment evaluation; choose from "
                            f"{', '.join(METHODS)}" if unknown else "give at least one method", field="methods",
                            choices=METHODS)
    return methods


def logprob(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The explained token's log-probability (``log_softmax``): unlike the logit, blind to a shift of every logit."""
    return logits.log_softmax(-1).gather(1, targets.view(-1, 1)).squeeze(1)


#: Losses the evaluation explains: the logit (attngrad's default, eq. 7) or the log-probability.
LOSSES: dict[str, LossLike] = {"logit": "logit", "logprob": logprob}


def check_vocabulary(explainer: Seq2SeqExplainer) -> None:
    """Refuse a model whose tokenizer does not give every word of the synthetic task one known token of its own."""
    from ..seq2seq.synthetic import vocabulary

    tokenizer = explainer.adapter.tokenizer
    unknown = tokenizer.unk_token_id
    for word in vocabulary()[3:]:
        ids = tokenizer(word, add_special_tokens=False).input_ids
        if len(ids) != 1 or ids[0] == unknown:
            raise AttngradError(f"this model was not trained on attngrad's synthetic task: its tokenizer turns "
                                f"{word!r} into {len(ids)} token(s){' (unknown)' if unknown in ids else ''}; "
                                "omit --model, or pass a folder written by scripts/train_seq2seq.py", field="model")


def _random_rows(sources: list[str], positions: list[int], width: int, seed: int) -> torch.Tensor:
    rows = [np.random.default_rng([seed, zlib.crc32(s.encode()), p]).random(width) for s, p in zip(sources, positions)]
    return torch.tensor(np.stack(rows), dtype=torch.float32)


def _attention_and_gradient(explainer: Seq2SeqExplainer, sources, targets, positions, want: set[str], loss: str):
    """Raw cross-attention rows and grad x input of the source embeddings, from one forward and backward pass."""
    adapter = explainer.adapter
    batch = adapter.encode(sources, targets, positions)
    device = adapter.device
    calls: list[torch.Tensor] = []
    model: Any = adapter.model
    embed = model.get_encoder().get_input_embeddings()
    hook = embed.register_forward_hook(lambda module, args, output: calls.append(output))
    try:
        out = adapter.forward(batch)
    finally:
        hook.remove()
    rows = torch.arange(len(sources), device=device)
    pos = batch.positions.to(device)
    src_mask = batch.attention_mask.to(device).float()
    found: dict[str, torch.Tensor] = {}
    if "attention_last" in want:
        found["attention_last"] = out.cross[-1].detach().mean(1)[rows, pos] * src_mask
    if "attention_mean" in want:
        found["attention_mean"] = torch.stack([c.detach().mean(1)[rows, pos] for c in out.cross]).mean(0) * src_mask
    if "grad_x_input" in want:
        source_embeddings = calls[0]  # the encoder runs first (the decoder may share the embedding)
        tokens = batch.targets.to(device)
        logits = out.logits[rows, pos]
        values = logprob(logits, tokens) if loss == "logprob" else logits.gather(1, tokens[:, None]).squeeze(1)
        (grad,) = torch.autograd.grad(values.sum(), [source_embeddings])
        found["grad_x_input"] = (grad * source_embeddings).sum(-1).detach() * src_mask
    return found


def score_tokens(explainer: Seq2SeqExplainer, pairs: Sequence[Pair], methods: Sequence[str] = METHODS, *,
                 batch_size: int = 16, seed: int = 0, loss: str = "logit", progress: bool = True) -> TokenScores:
    """Every method's source scores for every target token of ``pairs`` (end-of-sequence not explained).

    ``loss``: what is explained, ``logit`` (the token's logit) or ``logprob`` (its log-probability).

    ``batch_size`` counts sentences; each brings one row per target token into the batch.
    """
    from tqdm import tqdm

    methods = check_methods(methods)
    if not pairs:
        raise AttngradError("no sentences to evaluate")
    if batch_size < 1:
        raise AttngradError(f"--batch-size must be at least 1, not {batch_size}", field="batch_size")
    if loss not in LOSSES:
        raise AttngradError(f"unknown loss {loss!r}; choose from {', '.join(LOSSES)}", field="loss", choices=LOSSES)
    check_vocabulary(explainer)
    rules = [m for m in methods if m in RULES]
    extra = {m for m in methods if m in ("attention_last", "attention_mean", "grad_x_input")}
    width = max(len(p.source.split()) for p in pairs) + 1  # + </s>
    chunks: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    sentence, position, kinds, gold, valid = [], [], [], [], []
    bar = tqdm(total=len(pairs), desc="alignment", unit="sentence", disable=not progress, file=sys.stderr)
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        sources, targets, positions = [], [], []
        for n, pair in enumerate(chunk):
            for j, links in enumerate(pair.alignment):
                sources.append(pair.source)
                targets.append(pair.target)
                positions.append(j)
                sentence.append(start + n)
                position.append(j)
                kinds.append(pair.kinds[j])
                row = np.zeros(width, dtype=bool)
                row[list(links)] = True
                gold.append(row)
                row = np.zeros(width, dtype=bool)
                row[: len(pair.source.split()) + 1] = True
                valid.append(row)
        found: dict[str, torch.Tensor] = {}
        if rules:
            import warnings

            from ..seq2seq.explainer import EmptyExplanationWarning

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", EmptyExplanationWarning)  # zero rows are counted, not warned about
                results = explainer.explain_methods(sources, targets, rules, position=positions, loss=LOSSES[loss])
            found.update({m: r.source_scores for m, r in results.items()})
        if extra:
            found.update(_attention_and_gradient(explainer, sources, targets, positions, extra, loss))
        if "random" in methods:
            found["random"] = _random_rows(sources, positions, width, seed)
        for m in methods:
            block = np.zeros((len(sources), width), dtype=np.float32)
            values = found[m].float().cpu().numpy()
            block[:, : values.shape[1]] = values[:, :width]
            chunks[m].append(block)
        bar.update(len(chunk))
    bar.close()
    valid_arr = np.stack(valid)
    scores = {m: np.concatenate(chunks[m]) * valid_arr for m in methods}
    return TokenScores(np.array(sentence), np.array(position), np.array(kinds), np.stack(gold), valid_arr, scores)


def hard_alignment(scores: np.ndarray, valid: np.ndarray, k: np.ndarray) -> np.ndarray:
    """(N, S) links: per row the ``k[row]`` highest-scoring valid tokens; a constant row links nothing."""
    masked = np.where(valid, scores, -np.inf)
    order = np.argsort(-masked, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(scores.shape[1])[None, :].repeat(len(scores), 0), axis=1)
    links = (rank < k[:, None]) & valid
    lo = np.where(valid, scores, np.inf).min(1)
    hi = np.where(valid, scores, -np.inf).max(1)
    return links & (hi > lo)[:, None]


def aer(links: np.ndarray, gold: np.ndarray) -> float:
    """Alignment error rate with sure = possible = ``gold`` (Och & Ney 2003), over all rows."""
    both = float((links & gold).sum())
    return 1.0 - 2.0 * both / float(links.sum() + gold.sum())


def _per_sentence(tokens: TokenScores, method: str, n_sentences: int) -> dict[str, np.ndarray]:
    """Per sentence the counts every metric is a ratio of (so the bootstrap resamples sentences)."""
    s, gold, valid = tokens.scores[method], tokens.gold, tokens.valid
    k = gold.sum(1)
    links = hard_alignment(s, valid, k)
    top1 = hard_alignment(s, valid, np.ones_like(k))
    unrelated = valid & ~gold
    counts = {
        "both": (links & gold).sum(1), "links": links.sum(1), "gold": k,
        "both_top1": (top1 & gold).sum(1), "links_top1": top1.sum(1),
        "hit": (top1 & gold).any(1).astype(float), "tokens": np.ones(len(s)),
        "negative": np.where(unrelated, np.clip(-s, 0, None), 0).sum(1),
        "unrelated": np.where(unrelated, np.abs(s), 0).sum(1),
        "empty": (links.sum(1) == 0).astype(float),
    }
    for kind in ("word", "split", "agreement"):
        on = tokens.kinds == kind
        counts[f"both_{kind}"] = np.where(on, counts["both"], 0)
        counts[f"gold_{kind}"] = np.where(on, k, 0)
        counts[f"links_{kind}"] = np.where(on, counts["links"], 0)
        counts[f"hit_{kind}"] = np.where(on, counts["hit"], 0)
        counts[f"tokens_{kind}"] = on.astype(float)
    return {name: np.bincount(tokens.sentence, weights=v.astype(float), minlength=n_sentences)
            for name, v in counts.items()}


def _metrics(c: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Metrics from (summed) counts; works on arrays of resamples along axis 0."""
    def ratio(a, b):
        return np.divide(a, b, out=np.full(np.shape(a), np.nan), where=np.asarray(b) > 0)

    out = {
        "aer": 1 - ratio(2 * c["both"], c["links"] + c["gold"]),
        "aer_top1": 1 - ratio(2 * c["both_top1"], c["links_top1"] + c["gold"]),
        "pointing": ratio(c["hit"], c["tokens"]),
        "negative_share_unrelated": ratio(c["negative"], c["unrelated"]),
        "empty_rows": ratio(c["empty"], c["tokens"]),
    }
    for kind in ("word", "split", "agreement"):
        out[f"aer_{kind}"] = 1 - ratio(2 * c[f"both_{kind}"], c[f"links_{kind}"] + c[f"gold_{kind}"])
        out[f"pointing_{kind}"] = ratio(c[f"hit_{kind}"], c[f"tokens_{kind}"])
    return out


def summarize(tokens: TokenScores, *, bootstrap: int = 1000, seed: int = 0) -> dict:
    """Per method every metric with a 95 % percentile-bootstrap interval over sentences, and the paired differences."""
    n = int(tokens.sentence.max()) + 1
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(bootstrap, n))
    counts = {m: _per_sentence(tokens, m, n) for m in tokens.scores}
    samples = {}
    methods: dict[str, dict] = {}
    for m, c in counts.items():
        point = _metrics({k: v.sum() for k, v in c.items()})
        resampled = _metrics({k: v[draws].sum(1) for k, v in c.items()})
        samples[m] = resampled
        methods[m] = {"signed": m in SIGNED}
        for name, value in point.items():
            if name == "negative_share_unrelated" and m not in SIGNED:
                continue
            lo, hi = np.nanpercentile(resampled[name], [2.5, 97.5]) if np.isfinite(resampled[name]).any() else (np.nan,) * 2
            methods[m][name] = {"value": _num(value), "ci95": [_num(lo), _num(hi)]}
    paired = []
    for a, b in PAIRED:
        if a not in counts or b not in counts:
            continue
        entry: dict = {"a": a, "b": b}
        for name in ("aer", "aer_top1", "pointing", "aer_agreement"):
            diff = samples[a][name] - samples[b][name]
            value = methods[a][name]["value"] - methods[b][name]["value"]
            lo, hi = np.nanpercentile(diff, [2.5, 97.5])
            entry[name] = {"difference": _num(value), "ci95": [_num(lo), _num(hi)],
                           "share_of_resamples_below_0": _num(float(np.mean(diff < 0)))}
        paired.append(entry)
    return {"sentences": n, "target_tokens": len(tokens.sentence),
            "tokens_by_kind": {k: int((tokens.kinds == k).sum()) for k in ("word", "split", "agreement")},
            "bootstrap": bootstrap, "methods": methods, "paired": paired}


def _num(value) -> float | None:
    value = float(value)
    return round(value, 6) if np.isfinite(value) else None


def markdown(summary: dict) -> str:
    """The results table (value [95 % interval]) and the paired differences."""
    def cell(entry):
        if entry is None:
            return "–"
        lo, hi = entry["ci95"]
        return f"{entry['value']:.3f} [{lo:.3f}, {hi:.3f}]" if lo is not None else f"{entry['value']:.3f}"

    lines = [f"{summary['sentences']} held-out sentences, {summary['target_tokens']} target tokens "
             f"({', '.join(f'{v} {k}' for k, v in summary['tokens_by_kind'].items())}); 95 % bootstrap intervals "
             f"({summary['bootstrap']} resamples of sentences).", "",
             "| method | AER (top-\\|gold\\|) | AER (top-1) | pointing | AER, two-source tokens | "
             "pointing, two-source | negative share, unrelated | zero rows |",
             "|---|---|---|---|---|---|---|---|"]
    for m, e in summary["methods"].items():
        lines.append(f"| `{m}` | {cell(e['aer'])} | {cell(e['aer_top1'])} | {cell(e['pointing'])} | "
                     f"{cell(e['aer_agreement'])} | {cell(e['pointing_agreement'])} | "
                     f"{cell(e.get('negative_share_unrelated'))} | {e['empty_rows']['value']:.3f} |")
    if summary["paired"]:
        lines += ["", "Paired differences (a − b, same resamples; lower AER is better, higher pointing is better):", "",
                  "| a − b | AER | AER (top-1) | pointing | AER, two-source |", "|---|---|---|---|---|"]
        for p in summary["paired"]:
            cells = [f"{p[k]['difference']:+.3f} [{p[k]['ci95'][0]:+.3f}, {p[k]['ci95'][1]:+.3f}]"
                     for k in ("aer", "aer_top1", "pointing", "aer_agreement")]
            lines.append(f"| `{p['a']}` − `{p['b']}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def save_examples(path, pairs: Sequence[Pair], tokens: TokenScores, indices: Sequence[int]):
    """A figure: per chosen sentence, the true alignment beside each method's map (rows ``S / max|S|``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(tokens.scores)
    fig, axes = plt.subplots(len(indices), len(methods) + 1, squeeze=False,
                             figsize=(1.9 * (len(methods) + 1), 2.1 * len(indices)))
    for r, index in enumerate(indices):
        pair = pairs[index]
        rows = np.flatnonzero(tokens.sentence == index)
        n = int(tokens.valid[rows[0]].sum())
        src = pair.source.split() + ["</s>"]
        tgt = pair.target.split()
        panels = [("truth", tokens.gold[rows, :n].astype(float))]
        for m in methods:
            s = tokens.scores[m][rows, :n]
            scale = np.abs(s).max(1, keepdims=True)
            panels.append((m, np.divide(s, scale, out=np.zeros_like(s), where=scale > 0)))
        for c, (name, mat) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(mat, cmap="bwr", vmin=-1, vmax=1, aspect="auto")
            ax.set_xticks(range(n), src, rotation=90, fontsize=6)
            ax.set_yticks(range(len(tgt)), tgt, fontsize=6) if c == 0 else ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def pick_examples(pairs: Sequence[Pair], count: int = 3) -> list[int]:
    """Sentences for the figure: one with an adverb moved to the front and a two-word verb, one with negation,
    one plain (every sentence has the two-source agreement token and the verb-final reordering)."""
    chosen: list[int] = []
    tests = [lambda p: "split" in p.kinds and p.target.split()[0] != p.source.split()[0] and len(p.source.split()) <= 9,
             lambda p: " not " in f" {p.source} ", lambda p: len(p.source.split()) <= 6]
    for test in tests[:count]:
        found = next((i for i, p in enumerate(pairs) if test(p) and i not in chosen), None)
        if found is not None:
            chosen.append(found)
    return chosen or [0]
