"""Which loss should ``attngrad explain-lm`` use by default? A measurement on factual prompts.

Prompts: 3 templates ("The capital of {X} is", "The official language of {X} is", "The
currency of {X} is called the"; the country is never the first token) x 16 countries = 48 prompts whose answer depends on the country.
Target: the model's greedy next token. For each loss — ``logit`` of the target, ``diff`` and
``normdiff`` against the runner-up token — and each method, it reports the share of prompts
whose highest-scored token lies inside the country's tokens ("subject top-1"), with and without
the first token (the attention sink) in the ranking, and the first token's mean share of the
absolute scores per method.

    python benchmarks/lm_loss_choice.py [--model DIR] [--device cuda]
"""

from __future__ import annotations

import argparse

TEMPLATES = ("The capital of {x} is", "The official language of {x} is", "The currency of {x} is called the")
COUNTRIES = ("France", "Germany", "Italy", "Spain", "Japan", "China", "Russia", "Brazil", "Egypt", "Canada",
             "Mexico", "India", "Greece", "Sweden", "Poland", "Turkey")
METHODS = ("complete", "gae", "grad_x_input", "raw_attention", "random")
def logprob(logits, targets):
    """log p(target): the target's logit against every other token (log-softmax)."""
    return logits.log_softmax(dim=-1).gather(1, targets[:, None])[:, 0]


def vs_top10(logits, targets):
    """logit[target] - mean of the 10 highest other logits."""
    masked = logits.scatter(1, targets[:, None], float("-inf"))
    return logits.gather(1, targets[:, None])[:, 0] - masked.topk(10, dim=1).values.mean(dim=1)


LOSSES = (("logit", None), ("diff", "runner-up"), ("normdiff", "runner-up"), (logprob, None), (vs_top10, None))


def subject_span(lm, template: str, country: str) -> tuple[int, int]:
    """Token positions [start, end) of the country inside the tokenised prompt."""
    before = template.split("{x}")[0]
    start = len(lm.adapter.tokenize(before.rstrip())) if before.strip() else 0
    end = len(lm.adapter.tokenize(before + country))
    assert end > start, (template, country)
    return start, end


def main() -> None:
    from attngrad.lm import LMExplainer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    lm = LMExplainer.from_pretrained(args.model, device=args.device)
    prompts, spans = [], []
    for t in TEMPLATES:
        for c in COUNTRIES:
            prompts.append(t.format(x=c))
            spans.append(subject_span(lm, t, c))
    print(f"{len(prompts)} prompts; share whose top-scored token is in the country's tokens")
    print(f"{'loss':24s} " + " ".join(f"{m:>14s}" for m in METHODS) + "   (first token left out of the ranking)")
    for loss, contrast in LOSSES:
        res = lm.explain_methods(prompts, list(METHODS), loss=loss, contrast=contrast)
        cells, cells_skip = [], []
        if loss == "logit":  # the attention sink: share of |scores| on the first token
            shares = []
            for m in METHODS:
                total = sum(float(res[m].scores(i)[0].abs() / res[m].scores(i).abs().sum()) for i in range(len(prompts)))
                shares.append(f"{m} {total / len(prompts):.2f}")
            sink = "first token's share of |scores| (logit): " + ", ".join(shares)
        for m in METHODS:
            hits = hits_skip = 0
            for i, (a, b) in enumerate(spans):
                s = res[m].scores(i)
                hits += a <= int(s.argmax()) < b
                hits_skip += a <= int(s[1:].argmax()) + 1 < b
            cells.append(f"{hits / len(prompts):14.2f}")
            cells_skip.append(f"{hits_skip / len(prompts):.2f}")
        if contrast == "runner-up" and loss == "diff":
            from collections import Counter

            common = Counter(res["complete"].contrast_text).most_common(5)
            runner_up = ", ".join(f"{t!r} x{n}" for t, n in common)
        name = (loss if isinstance(loss, str) else loss.__name__) + ("" if contrast is None else f" vs {contrast}")
        print(f"{name:24s} " + " ".join(cells) + "   (" + " ".join(cells_skip) + ")")
    print(f"most common runner-up tokens: {runner_up}")
    print(sink)


if __name__ == "__main__":
    main()
