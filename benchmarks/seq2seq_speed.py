"""Seq2seq explanation time over forward + backward time, on a random Marian-sized model (CPU by default).

No encoder-decoder weights are on this machine, so the model is random, with the shape of
``Helsinki-NLP/opus-mt-en-de`` (d_model 512, 6 + 6 layers, 8 heads, FFN 2048) and a word-level
tokenizer built here; speed does not depend on the weights' values.

Baseline ("forward + backward"): the model on the already tokenised, padded batch with eager
attention and every map returned, the explained logits, and one ``torch.autograd.grad`` of
their sum to every encoder, decoder and cross-attention map. Explanation: the whole call
``Seq2SeqExplainer.explain_methods(sources, targets, methods, position=...)``, tokenisation,
the relevance rules and the result objects included. Runs alternate; medians are compared.

    OMP_NUM_THREADS=1 python benchmarks/seq2seq_speed.py --threads 1 --repeats 5 --out seq2seq_speed.json
"""

from __future__ import annotations

import argparse

import torch
from _timing import ratio, write_json

from attngrad.seq2seq import Seq2SeqExplainer

SOURCES = [
    "the quick brown fox jumps over the lazy dog near the river bank",
    "a small cat sat on the warm mat in the kitchen",
    "my car is red and my bike is blue",
    "the team won the game after a long and hard season",
    "how do i fix a flat tire on my bike",
    "the bank raised its interest rate again this year",
    "she reads a book every night before she goes to sleep",
    "we walked in the park and then we had dinner together",
]


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for s in SOURCES for w in s.split()})
    vocab = {w: i for i, w in enumerate(["<pad>", "<s>", "</s>", "<unk>"] + words)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def _model(vocab: int):
    from transformers import MarianConfig, MarianMTModel

    torch.manual_seed(0)
    config = MarianConfig(vocab_size=max(vocab, 58101), d_model=512, encoder_layers=6, decoder_layers=6,
                          encoder_attention_heads=8, decoder_attention_heads=8, encoder_ffn_dim=2048,
                          decoder_ffn_dim=2048, pad_token_id=0, eos_token_id=2, decoder_start_token_id=0)
    return MarianMTModel(config).eval()


def measure(explainer: Seq2SeqExplainer, sources, targets, methods, repeats):
    adapter = explainer.adapter
    batch = adapter.encode(sources, targets, [-1] * len(sources))

    def base() -> None:
        out = adapter.forward(batch)
        rows = torch.arange(len(sources))
        loss = out.logits[rows, batch.positions, batch.targets].sum()
        torch.autograd.grad(loss, out.encoder + out.decoder + out.cross)

    def explain() -> object:
        return explainer.explain_methods(sources, targets, methods, position=-1)

    return ratio(base, explain, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tokenizer = _tokenizer()
    explainer = Seq2SeqExplainer(_model(len(tokenizer)), tokenizer, device=args.device)
    sources = (SOURCES * (args.batch // len(SOURCES) + 1))[: args.batch]
    targets = [" ".join(reversed(s.split())) for s in sources]  # a target of the source's length
    rows = []
    for methods in (["complete"], ["complete", "gae", "absolute"]):
        result = measure(explainer, sources, targets, methods, args.repeats)
        rows.append({"methods": "+".join(methods), "batch": args.batch, **result})
        print(f"{'+'.join(methods):26s} forward+backward {result['forward_backward_s'] * 1000:7.1f} ms  "
              f"explanation {result['explanation_s'] * 1000:7.1f} ms  ratio {result['ratio']:.3f}")
    if args.out:
        write_json(args.out, {"threads": args.threads, "device": args.device, "results": rows})


if __name__ == "__main__":
    main()
