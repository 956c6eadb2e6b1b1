"""A synthetic translation task whose word alignment is known by construction.

Source sentences are English-like: ``[the|a] [ADJ] NOUN [not] VERB [the|a] [ADJ] NOUN [ADVERB]``.
The target language is made up, and every target word records the source words it comes from:

- a word-to-word dictionary: nouns, adjectives and most verbs give one target word, two verbs and
  two adverbs give **two** target words, the articles ``the`` / ``a`` give **none**;
- reordering: adjective after its noun, the verb at the end of the clause (subject, object, verb),
  the adverb at the front;
- a **two-source** ("logical") token: the last target word marks agreement of the verb with both
  the subject's and the object's number (``ta``/``te``/``ti``/``to``), so it depends on two distant
  source words, the two nouns; negation (``not``) becomes ``ne`` before the verb.

Every word is one token (a word-level tokenizer, :func:`build_tokenizer`), so word ``i`` of the
source is source token ``i`` (the end-of-sequence token comes last) and the alignment of
target token ``j`` is :attr:`Pair.alignment` ``[j]``: the set of source word indices it comes from.

Everything is seeded: :func:`sample` draws the same pairs for the same seed; :func:`is_held_out`
splits by a hash of the source text (one in ten sentences), so training never sees a held-out
sentence, whatever the seed.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

NOUNS = {"cat": "mau", "dog": "wof", "bird": "pio", "fish": "glu", "horse": "hii", "child": "kin",
         "farmer": "agro", "king": "rex", "tree": "arbo", "house": "domo", "car": "voto", "book": "libo"}
PLURAL = {"cat": "cats", "dog": "dogs", "bird": "birds", "fish": "fishes", "horse": "horses", "child": "children",
          "farmer": "farmers", "king": "kings", "tree": "trees", "house": "houses", "car": "cars", "book": "books"}
ADJECTIVES = {"big": "gran", "small": "pik", "red": "ruj", "blue": "blu", "old": "vej", "new": "nov",
              "happy": "fel", "quiet": "kvi"}
VERBS = {"sees": ("vid",), "likes": ("ama",), "eats": ("man",), "chases": ("kur",), "finds": ("tro",),
         "takes": ("pren",), "greets": ("salu", "fa"), "follows": ("pos", "ir")}
ADVERBS = {"today": ("hodi", "jam"), "quickly": ("rapi", "do"), "often": ("ofte",), "again": ("re",)}
ARTICLES = ("the", "a")
NEGATION = ("not", "ne")
#: The agreement word: (subject plural, object plural) -> target word.
AGREEMENT = {(False, False): "ta", (False, True): "te", (True, False): "ti", (True, True): "to"}
PLURAL_SUFFIX = "i"  # target plural: the noun's word + "i" (one token)

SPECIAL = ("<pad>", "</s>", "<unk>")

#: The Marian-shaped model trained on this task (``scripts/train_seq2seq.py``), shipped with attngrad.
MODEL = Path(str(resources.files("attngrad").joinpath("assets/seq2seq/synthetic")))
#: How the shipped model is labelled wherever it is used by default.
MODEL_LABEL = "attngrad's synthetic-task model (a made-up language with known alignments; see docs/seq2seq.md)"


@dataclass(frozen=True)
class Pair:
    """A source sentence, its translation and the alignment.

    Attributes:
        source, target: the texts (words separated by single spaces).
        alignment: per target word, the indices of the source words it comes from.
        kinds: per target word, what produced it: ``word`` (one source word), ``split`` (one of two
            target words of one source word), ``agreement`` (two source words).
        reordered: true when the alignment is not monotone (some target word comes from an
            earlier source word than the one before it).
    """

    source: str
    target: str
    alignment: tuple[frozenset[int], ...]
    kinds: tuple[str, ...]

    @property
    def reordered(self) -> bool:
        firsts = [min(a) for a in self.alignment]
        return any(b < a for a, b in zip(firsts, firsts[1:]))


def vocabulary() -> list[str]:
    """Every token of both languages (one shared vocabulary), special tokens first."""
    words: list[str] = list(SPECIAL)
    words += list(NOUNS) + list(PLURAL.values()) + list(ADJECTIVES) + list(VERBS) + list(ADVERBS)
    words += list(ARTICLES) + [NEGATION[0]]
    words += list(NOUNS.values()) + [w + PLURAL_SUFFIX for w in NOUNS.values()] + list(ADJECTIVES.values())
    words += [w for ws in VERBS.values() for w in ws] + [w for ws in ADVERBS.values() for w in ws]
    words += [NEGATION[1]] + list(AGREEMENT.values())
    seen: dict[str, None] = {}
    for w in words:
        seen.setdefault(w, None)
    return list(seen)


def translate(words: list[str]) -> Pair:
    """The translation and alignment of a source sentence given as words (the grammar above)."""
    i = 0
    src: list[str] = list(words)

    def noun_phrase() -> tuple[list[tuple[str, frozenset[int], str]], int, bool]:
        nonlocal i
        out = []
        if i < len(src) and src[i] in ARTICLES:
            i += 1  # articles give no target word
        adjective = None
        if i < len(src) and src[i] in ADJECTIVES:
            adjective = i
            i += 1
        if i >= len(src):
            raise ValueError(f"a noun phrase ends early in {' '.join(src)!r}")
        word = src[i]
        plural = word in PLURAL.values()
        singular = next((s for s, p in PLURAL.items() if p == word), word) if plural else word
        if singular not in NOUNS:
            raise ValueError(f"{word!r} is not a noun")
        noun = i
        i += 1
        out.append((NOUNS[singular] + (PLURAL_SUFFIX if plural else ""), frozenset({noun}), "word"))
        if adjective is not None:  # adjective after its noun
            out.append((ADJECTIVES[src[adjective]], frozenset({adjective}), "word"))
        return out, noun, plural

    subject, subject_noun, subject_plural = noun_phrase()
    negated = None
    if i < len(src) and src[i] == NEGATION[0]:
        negated = i
        i += 1
    if i >= len(src) or src[i] not in VERBS:
        raise ValueError(f"expected a verb at word {i} of {' '.join(src)!r}")
    verb = i
    i += 1
    obj, object_noun, object_plural = noun_phrase()
    adverb = None
    if i < len(src) and src[i] in ADVERBS:
        adverb = i
        i += 1
    if i != len(src):
        raise ValueError(f"unexpected words after {' '.join(src[:i])!r}")
    out: list[tuple[str, frozenset[int], str]] = []
    if adverb is not None:  # adverb first
        parts = ADVERBS[src[adverb]]
        out += [(p, frozenset({adverb}), "split" if len(parts) > 1 else "word") for p in parts]
    out += subject + obj  # subject, object, then the verb: verb-final
    if negated is not None:
        out.append((NEGATION[1], frozenset({negated}), "word"))
    parts = VERBS[src[verb]]
    out += [(p, frozenset({verb}), "split" if len(parts) > 1 else "word") for p in parts]
    out.append((AGREEMENT[subject_plural, object_plural], frozenset({subject_noun, object_noun}), "agreement"))
    return Pair(" ".join(src), " ".join(w for w, _, _ in out), tuple(a for _, a, _ in out),
                tuple(k for _, _, k in out))


def _random_sentence(rng: random.Random) -> list[str]:
    def noun_phrase() -> list[str]:
        words = []
        if rng.random() < 0.7:
            words.append(rng.choice(ARTICLES))
        if rng.random() < 0.5:
            words.append(rng.choice(list(ADJECTIVES)))
        noun = rng.choice(list(NOUNS))
        words.append(PLURAL[noun] if rng.random() < 0.5 else noun)
        return words

    words = noun_phrase()
    if rng.random() < 0.3:
        words.append(NEGATION[0])
    words.append(rng.choice(list(VERBS)))
    words += noun_phrase()
    if rng.random() < 0.4:
        words.append(rng.choice(list(ADVERBS)))
    return words


def is_held_out(source: str) -> bool:
    """One sentence in ten (by a hash of its text) is held out of training."""
    return zlib.crc32(source.encode()) % 10 == 0


def sample(n: int, *, seed: int = 0, held_out: bool | None = None) -> list[Pair]:
    """``n`` distinct pairs drawn with ``seed``; ``held_out`` True / False keeps only held-out /
    training sentences (:func:`is_held_out`), None keeps both."""
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[Pair] = []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 200 * n + 1000:
            raise ValueError(f"could not draw {n} distinct sentences")
        pair = translate(_random_sentence(rng))
        if pair.source in seen or (held_out is not None and is_held_out(pair.source) != held_out):
            continue
        seen.add(pair.source)
        out.append(pair)
    return out


def build_tokenizer():
    """A word-level fast tokenizer over :func:`vocabulary` (one token per word, ``</s>`` appended)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(vocabulary())}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", vocab["</s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=32)
