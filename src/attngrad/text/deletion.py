"""The token-deletion test for text similarity (the text counterpart of the perturbation test).

For each sentence pair (A, B), A is explained against B (loss ``cos(e(A), e(B))``); the
highest-scored word pieces of A (special tokens never) are removed — 10 %, 20 %, ..., 90 %
of A's scored tokens, rounded to the nearest count — the shortened A is encoded again and
its cosine similarity with B recorded. The curve is the mean similarity over the pairs at
0 % (the unperturbed pairs), 10 %, ..., 90 %; its area is the trapezoid rule with step
0.1, x 100 (method.md, "The perturbation test"). A method that finds what makes A close
to B makes the similarity fall fast: lower area is better; ``random`` is the floor.
Removing the lowest-scored tokens first is the negative direction (higher area is better).

The pairs (:func:`sentence_pairs`) are generated here, deterministically, from
hand-written templates — 20 everyday scenes (repairs, sports, cooking, money, travel,
health, ...), each with 2 phrasings of A, 2 paraphrases B and 3 fillers of a shared
slot: 20 x 2 x 2 x 3 = 240 pairs, nothing downloaded, shipped as code.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from .explainer import TextExplainer

FRACTIONS = tuple(round(0.1 * i, 1) for i in range(1, 10))
METHODS = ("complete", "gae", "rollout", "random")

#: (A phrasings, B paraphrases, fillers of ``{x}``): one everyday scene per entry.
SCENES: tuple[tuple[tuple[str, str], tuple[str, str], tuple[str, str, str]], ...] = (
    (("How do I fix a flat {x} tire?", "What is the best way to repair a punctured {x} tyre?"),
     ("My {x} has a flat tire and I need to patch it.", "The tyre on my {x} lost all its air overnight."),
     ("bicycle", "car", "scooter")),
    (("Our team won the {x} final last night.", "The {x} championship ended with a late winning goal."),
     ("We celebrated the {x} victory with the fans.", "After a tense match the {x} trophy was ours."),
     ("football", "hockey", "basketball")),
    (("How long should I bake {x} bread?", "What oven temperature is right for {x} bread?"),
     ("My {x} loaf came out burnt on the outside.", "I am baking a {x} loaf for the first time."),
     ("banana", "sourdough", "rye")),
    (("The bank raised interest rates on {x} loans.", "Borrowing costs for {x} loans went up again this month."),
     ("Paying back my {x} loan is getting more expensive.", "Lenders now charge more for a {x} loan."),
     ("student", "mortgage", "car")),
    (("Which train goes from the airport to {x}?", "How do I get from the airport to {x} by rail?"),
     ("I need a rail ticket to {x} after my flight lands.", "Is there a direct train from the terminal to {x}?"),
     ("Paris", "Berlin", "Rome")),
    (("My {x} hurts after running every morning.", "Running daily has left me with a sore {x}."),
     ("I should see a doctor about the pain in my {x}.", "Jogging makes my {x} ache badly."),
     ("knee", "ankle", "back")),
    (("The {x} keeps crashing when I open it.", "Every time I start the {x} it freezes and closes."),
     ("I reinstalled the {x} but it still crashes.", "The {x} stops responding a few seconds after launch."),
     ("browser", "game", "editor")),
    (("Water is leaking from under the {x}.", "There is a puddle below my {x} every morning."),
     ("I think a pipe behind the {x} is broken.", "A plumber has to look at the leaking {x}."),
     ("sink", "dishwasher", "washing machine")),
    (("Our {x} barks at every stranger.", "The {x} will not stop barking at visitors."),
     ("How can I train my {x} to be calm with guests?", "Strangers make our {x} very noisy."),
     ("puppy", "old dog", "terrier")),
    (("The {x} was delayed by three hours.", "We waited three hours for the late {x}."),
     ("Our {x} left much later than planned.", "A long delay hit the {x} this morning."),
     ("flight", "ferry", "bus")),
    (("I want to learn to play the {x}.", "What is the easiest way to start playing {x}?"),
     ("Beginner lessons for the {x} are on my list.", "I bought a {x} and need a teacher."),
     ("guitar", "piano", "violin")),
    (("The price of {x} went up at the market.", "{x} costs much more than it did last year."),
     ("Shops are charging more for {x} this season.", "I noticed {x} is getting expensive."),
     ("coffee", "rice", "olive oil")),
    (("The {x} battery dies before lunch.", "My {x} runs out of power in a few hours."),
     ("I need a new battery for my {x}.", "Charging the {x} twice a day is annoying."),
     ("phone", "laptop", "tablet")),
    (("It will snow heavily in {x} tomorrow.", "A big snowstorm is expected over {x} tomorrow."),
     ("Roads in {x} may close because of the snow.", "Forecasters warn of deep snow in {x}."),
     ("the mountains", "the north", "the city")),
    (("She scored a perfect mark on the {x} exam.", "Her {x} test result was the best in class."),
     ("The {x} exam went very well for her.", "She studied hard and aced {x}."),
     ("math", "chemistry", "history")),
    (("The {x} in the kitchen stopped working.", "Our kitchen {x} broke down today."),
     ("We have to replace the broken {x}.", "A technician is coming to fix the {x}."),
     ("fridge", "oven", "microwave")),
    (("How do I grow {x} on a balcony?", "Can {x} grow in pots on a small balcony?"),
     ("I planted {x} in containers outside my flat.", "My balcony {x} need more sunlight."),
     ("tomatoes", "herbs", "strawberries")),
    (("The museum opened a new {x} exhibition.", "A {x} show just opened at the museum."),
     ("We visited the {x} exhibition this weekend.", "The museum's {x} collection is worth a visit."),
     ("dinosaur", "painting", "photography")),
    (("My {x} payment was charged twice.", "I was billed two times for the {x}."),
     ("The {x} company took my money twice.", "I need a refund for a double {x} charge."),
     ("internet", "electricity", "gym")),
    (("The hotel room had a view of the {x}.", "From our hotel window we could see the {x}."),
     ("We booked a room facing the {x}.", "The {x} view from the room was beautiful."),
     ("sea", "lake", "old town")),
)


def sentence_pairs() -> list[tuple[str, str]]:
    """The fixed set of 240 (A, B) pairs: every scene x A phrasing x B paraphrase x filler, in order."""
    pairs = []
    for a_forms, b_forms, fillers in SCENES:
        for a, b, x in itertools.product(a_forms, b_forms, fillers):
            pairs.append((_capitalize(a.format(x=x)), _capitalize(b.format(x=x))))
    return pairs


def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


@dataclass
class DeletionResult:
    """Similarity curves of the deletion test.

    Attributes:
        fractions: (0, 0.1, ..., 0.9).
        curves: per method, the mean cosine similarity at each fraction.
        pairs: how many pairs were averaged.
    """

    fractions: list[float]
    curves: dict[str, list[float]] = field(default_factory=dict)
    pairs: int = 0
    lowest_first: bool = False

    @property
    def auc(self) -> dict[str, float]:
        """Area under each curve: trapezoid rule with step 0.1, x 100 (highest first: lower is better)."""
        return {m: 100 * float(np.trapezoid(c, dx=0.1)) for m, c in self.curves.items()}

    def table(self) -> str:
        """A Markdown table: AUC and the similarity drop at 10 %, 30 %, 50 % per method."""
        cols = [f for f in (0.1, 0.3, 0.5) if f in self.fractions]
        better = "higher" if self.lowest_first else "lower"
        head = f"| method | AUC ({better} is better) | " + " | ".join(f"drop at {int(f * 100)} %" for f in cols) + " |"
        rows = [head, "|---|---|" + "---|" * len(cols)]
        for m, curve in self.curves.items():
            drops = [curve[0] - curve[self.fractions.index(f)] for f in cols]
            rows.append(f"| {m} | {self.auc[m]:.2f} | " + " | ".join(f"{d:.3f}" for d in drops) + " |")
        return "\n".join(rows)

    def save(self, folder: str | Path) -> Path:
        """``curves.csv`` (fraction x method) and ``deletion.json`` (curves, AUC, pairs) in ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "curves.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["fraction", *self.curves])
            for i, frac in enumerate(self.fractions):
                writer.writerow([frac, *(c[i] for c in self.curves.values())])
        path = folder / "deletion.json"
        path.write_text(json.dumps({"pairs": self.pairs, "removed": "lowest first" if self.lowest_first else "highest first",
                                    "fractions": self.fractions, "curves": self.curves, "auc": self.auc}, indent=1))
        return path


def removal_count(fraction: float, tokens: int) -> int:
    """How many of ``tokens`` scored tokens a fraction removes: the nearest whole number (halves up)."""
    return int(math.floor(fraction * tokens + 0.5))


def deleted_ids(input_ids: torch.Tensor, attention_mask: torch.Tensor, content: torch.Tensor, scores: torch.Tensor,
                fraction: float, lowest_first: bool = False) -> list[list[int]]:
    """Per text, its real token ids with the ``fraction`` highest-scored (or lowest-scored) content tokens
    removed, the rest in order; ties go to the earlier token."""
    key = -scores if lowest_first else scores
    ranked = key.masked_fill(~content, float("-inf")).sort(dim=1, descending=True, stable=True).indices
    out = []
    for ids, mask, keep_mask, order in zip(input_ids.tolist(), attention_mask.tolist(), content.sum(1).tolist(), ranked.tolist()):
        removed = set(order[: removal_count(fraction, keep_mask)])
        out.append([t for j, (t, m) in enumerate(zip(ids, mask)) if m and j not in removed])
    return out


def embed(explainer: TextExplainer, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Sentence embeddings (B, D) of a padded batch, without gradients."""
    with torch.no_grad():
        return explainer.adapter.forward(explainer.adapter.embed(input_ids), attention_mask.to(explainer.device)).logits


def embed_ids(explainer: TextExplainer, ids: Sequence[Sequence[int]]) -> torch.Tensor:
    """Sentence embeddings (B, D) of token id lists (special tokens included), padded into one batch."""
    pad = explainer.adapter.tokenizer.pad_token_id or 0
    batch = torch.full((len(ids), max(len(i) for i in ids)), pad, dtype=torch.long)
    mask = torch.zeros_like(batch)
    for row, seq in enumerate(ids):
        batch[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    return embed(explainer, batch, mask)


def run_deletion(
    explainer: TextExplainer,
    pairs: Sequence[tuple[str, str]] | None = None,
    methods: Sequence[str] = METHODS,
    fractions: Sequence[float] = FRACTIONS,
    batch_size: int = 32,
    progress: bool = True,
    lowest_first: bool = False,
) -> DeletionResult:
    """Run the deletion test; every batch of pairs is explained with all methods in one pass.

    ``lowest_first`` removes the lowest-scored tokens first instead (the negative direction: for a
    signed map, the tokens that push A away from B go first, so higher area is better).
    """
    pairs = sentence_pairs() if pairs is None else list(pairs)
    sums = {m: np.zeros(len(fractions) + 1) for m in methods}
    batches = [pairs[i : i + batch_size] for i in range(0, len(pairs), batch_size)]
    for batch in tqdm(batches, desc="deletion test", unit="batch", disable=not progress):
        a_texts, b_texts = [list(t) for t in zip(*batch)]
        results = explainer.explain_methods(a_texts, methods, against=b_texts)
        first = next(iter(results.values()))
        enc = first.encoded
        reverse = first.reverse
        assert reverse is not None, "explained against b_texts: the result carries the reverse (B) pass"
        b_emb = embed(explainer, reverse.encoded.input_ids, reverse.encoded.attention_mask)
        for m, res in results.items():
            sims = [res.logits[:, 0]]
            for frac in fractions:
                kept = deleted_ids(enc.input_ids, enc.attention_mask, enc.content, res.maps, frac, lowest_first)
                sims.append(torch.nn.functional.cosine_similarity(embed_ids(explainer, kept), b_emb, dim=-1))
            sums[m] += torch.stack(sims, dim=1).sum(dim=0).cpu().numpy()
    curves = {m: (s / len(pairs)).tolist() for m, s in sums.items()}
    return DeletionResult([0.0, *fractions], curves, len(pairs), lowest_first)
