"""Train the small Marian-shaped translation model of the synthetic alignment task (attngrad.seq2seq.synthetic).

    OMP_NUM_THREADS=2 python scripts/train_seq2seq.py --out src/attngrad/assets/seq2seq/synthetic

A ``MarianMTModel`` built from a config (d_model 64, 3 + 3 layers, 4 heads, shared word-level
vocabulary), trained from scratch on training sentences of the generator (never a held-out one:
:func:`attngrad.seq2seq.synthetic.is_held_out`), then checked by greedy decoding of held-out
sentences (exact match of the whole translation). Writes the model and its tokenizer to ``--out``
(a Hugging Face folder that ``Seq2SeqExplainer.from_pretrained`` loads) and ``training.json``
(settings, time, accuracy) beside them.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch


def _batches(pairs, tokenizer, batch_size: int, rng: random.Random):
    order = list(range(len(pairs)))
    rng.shuffle(order)
    for start in range(0, len(order), batch_size):
        chunk = [pairs[i] for i in order[start:start + batch_size]]
        enc = tokenizer([p.source for p in chunk], padding=True, return_tensors="pt")
        lab = tokenizer(text_target=[p.target for p in chunk], padding=True, return_tensors="pt")
        labels = lab.input_ids.masked_fill(lab.attention_mask == 0, -100)
        yield enc.input_ids, enc.attention_mask, labels


@torch.no_grad()
def exact_match(model, tokenizer, pairs, batch_size: int = 256) -> float:
    """Share of ``pairs`` whose greedy translation equals the target exactly."""
    model.eval()
    right = 0
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        enc = tokenizer([p.source for p in chunk], padding=True, return_tensors="pt")
        out = model.generate(**enc, max_new_tokens=24, num_beams=1, do_sample=False)
        texts = tokenizer.batch_decode(out, skip_special_tokens=True)
        right += sum(t.strip() == p.target for t, p in zip(texts, chunk))
    return right / len(pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="Model folder to write.")
    parser.add_argument("--train", type=int, default=40000, help="Training sentences.")
    parser.add_argument("--test", type=int, default=1000, help="Held-out sentences for the exact-match check.")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--ffn", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from transformers import GenerationConfig, MarianConfig, MarianMTModel

    from attngrad.seq2seq import synthetic

    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    tokenizer = synthetic.build_tokenizer()
    train = synthetic.sample(args.train, seed=args.seed, held_out=False)
    test = synthetic.sample(args.test, seed=args.seed + 1, held_out=True)
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    config = MarianConfig(
        vocab_size=len(tokenizer), d_model=args.d_model, encoder_layers=args.layers, decoder_layers=args.layers,
        encoder_attention_heads=args.heads, decoder_attention_heads=args.heads, encoder_ffn_dim=args.ffn,
        decoder_ffn_dim=args.ffn, max_position_embeddings=32, pad_token_id=pad, eos_token_id=eos,
        decoder_start_token_id=pad, forced_eos_token_id=eos, dropout=0.1, attention_dropout=0.0,
        activation_function="gelu", scale_embedding=True, share_encoder_decoder_embeddings=True,
        tie_word_embeddings=True,
    )
    model = MarianMTModel(config)
    model.generation_config = GenerationConfig(decoder_start_token_id=pad, pad_token_id=pad, eos_token_id=eos,
                                               max_length=32, num_beams=1)
    steps = args.epochs * math.ceil(len(train) / args.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))))
    started = time.perf_counter()
    step = 0
    for epoch in range(args.epochs):
        model.train()
        total, count = 0.0, 0
        for input_ids, mask, labels in _batches(train, tokenizer, args.batch_size, rng):
            loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            step += 1
            total += float(loss.detach())
            count += 1
            if step % 200 == 0:
                print(f"step {step}/{steps} loss {total / count:.4f} {time.perf_counter() - started:.0f} s", flush=True)
        accuracy = exact_match(model, tokenizer, test[:200])
        print(f"epoch {epoch + 1}: loss {total / count:.4f}, exact match on 200 held-out {accuracy:.3f}", flush=True)
    seconds = time.perf_counter() - started
    accuracy = exact_match(model, tokenizer, test)
    print(f"trained in {seconds:.0f} s; exact match on {len(test)} held-out sentences: {accuracy:.4f}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    info = {"task": "attngrad.seq2seq.synthetic (synthetic translation task with known alignments)",
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "parameters": sum(p.numel() for p in model.parameters()),
            "train_seconds": round(seconds, 1), "torch_threads": torch.get_num_threads(),
            "held_out_sentences": len(test), "held_out_exact_match": accuracy}
    (args.out / "training.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
