"""Speed of a Qwen2-VL explanation against one plain forward + backward of the whole model (random weights).

No Qwen2-VL weights are needed: speed does not depend on them, so a randomly initialised
``Qwen2VLForConditionalGeneration`` of a reduced size serves (Qwen2-VL-2B's layout, fewer and
narrower layers: vision depth 8, width 320, 14 px patches merged 2 x 2; language model 8 layers of
512 with grouped key/value heads). The base is the model's own forward (eager attention, 3-D
positions, the processor's patch layout) and the backward of the target logits to the pixels,
weights frozen; the explanation is ``explain_methods`` with the given methods and both readings.
Interleaved repeats, medians.

    python benchmarks/vlm_qwen2vl_speed.py --batch-size 4 --image-size 224 --repeats 5 [--methods ...] [--json]
"""

from __future__ import annotations

import argparse
import json

import torch
from vlm_speed import measure  # type: ignore[import-not-found]

from attngrad.vlm import VLMAdapter, VLMExplainer

WORDS = "user answer what is in this photo".split()


def _model_and_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2VLConfig, Qwen2VLForConditionalGeneration

    torch.manual_seed(0)
    vocab = {"<pad>": 0, "<unk>": 1, "<eos>": 2, "<image>": 3, **{w: 4 + i for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>")
    cfg = Qwen2VLConfig(
        vision_config=dict(depth=8, embed_dim=320, hidden_size=512, num_heads=8, mlp_ratio=4, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2),
        text_config=dict(vocab_size=1000, hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
                         num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=4096, pad_token_id=0,
                         eos_token_id=2, bos_token_id=None,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [8, 12, 12]}),
        image_token_id=3, video_token_id=997, vision_start_token_id=998, vision_end_token_id=999,
        attn_implementation="eager")
    return Qwen2VLForConditionalGeneration(cfg).eval(), tokenizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--methods", default="complete")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = _model_and_tokenizer()
    ex = VLMExplainer(VLMAdapter(model, tokenizer, template="user <image> {prompt} answer", image_size=args.image_size),
                      batch_size=args.batch_size)
    pixels = torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=torch.Generator().manual_seed(1))
    methods = [m.strip() for m in args.methods.split(",")]
    result = measure(ex, pixels, "what is in this photo", methods, args.repeats) | {"image_size": args.image_size}
    print(json.dumps(result, indent=1) if args.json else
          f"batch {args.batch_size}, {args.image_size} px ({result['image_tokens']} image tokens), {','.join(methods)}: "
          f"forward+backward {result['forward_backward_s']:.3f} s, explanation {result['explanation_s']:.3f} s, "
          f"ratio {result['ratio']:.2f}")

if __name__ == "__main__":
    main()
