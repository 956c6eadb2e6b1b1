"""Does the LLaVA stand-in's map favour one image token whatever the image shows? (the last one, patch 195)

Every 40th image of the sample (25 images), "What is in this photo?", the stand-in's greedy next token explained.
For each method and reading: the mean share of the map's positive relevance on the last image token (patch 195,
the bottom-right corner; uniform: 1/196 = 0.005), how often that token holds the map's maximum, and the first
token's share; then the same for the images turned by 180 degrees (the content moves, the token's position does not).
The same numbers for the shipped ViT-Ti's own maps of its top class (``attngrad.Explainer``), and what the models
do at that token: the norm of the ViT's last hidden state there against the median patch (a high-norm token
is the artefact of Darcet et al., "Vision Transformers Need Registers", ICLR 2024) and after the projector, and
the share of the language model's attention (mean over layers and heads; from the predicting position, and from
the text after the image) on the last image position, with the patches in order and in reverse order (patch 195's
features first): attention that stays at the last position follows the position, not the features.

    python benchmarks/vlm_position.py --data ../shared/data --json docs/results/vlm/position.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from _timing import write_json  # noqa: E402
from train_vlm import prompt_embeds, sequences  # noqa: E402

from attngrad import Explainer  # noqa: E402
from attngrad.vlm import VLMExplainer  # noqa: E402
from attngrad.vlm.load import stand_in_settings  # noqa: E402

QUESTION = "What is in this photo?"
LAST = 195  # the 14 x 14 grid's last patch, row-major


def position_stats(maps: torch.Tensor) -> dict:
    """maps: (B, 14, 14) or (B, 196) signed maps -> the last and first tokens' mean shares of the positive part."""
    flat = maps.reshape(maps.shape[0], -1).float()
    positive = flat.clamp(min=0)
    share = positive / positive.sum(1, keepdim=True).clamp(min=1e-12)
    return {"last_token_share": round(float(share[:, LAST].mean()), 4),
            "last_token_is_max": round(float((flat.argmax(1) == LAST).float().mean()), 3),
            "first_token_share": round(float(share[:, 0].mean()), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--every", type=int, default=40, help="take every N-th image of the sample (sorted by name)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    started = time.time()
    files = [str(f) for f in sorted((args.data / "imagenet-sample").glob("*.jpg"))[:: args.every]]
    ex = VLMExplainer.from_pretrained(quiet=True)
    pixels = ex.pixels(files)
    out: dict = {"images": len(files), "question": QUESTION, "uniform_share": round(1 / 196, 4)}
    for name, px in (("upright", pixels), ("turned_180", pixels.flip(-1, -2))):
        res = ex.explain_methods(px, QUESTION, ["complete", "gae"], readings=("language", "vision"))
        out[f"vlm_{name}"] = {f"{m}/{r}": position_stats(e.maps) for (m, r), e in res.items()}
    vit = Explainer.from_pretrained()
    out["vit_alone"] = {m: position_stats(vit.explain(files, method=m).maps) for m in ("complete", "gae")}
    model = ex.adapter.model
    lm = model.model.language_model
    lm.config._attn_implementation = "eager"
    head, tail, _ = sequences(ex.adapter.tokenizer, stand_in_settings()["template"], QUESTION, [])
    first, end = len(head) + 1, len(head) + 197  # the 196 patch tokens (the class token before them left out)
    with torch.no_grad():
        feats = model.model.vision_tower(pixels, output_hidden_states=True).hidden_states[-1]  # (B, 197, D)
        norms = feats[:, 1:].norm(dim=-1)  # (B, 196)
        projected = model.model.multi_modal_projector(feats[:, 1:]).norm(dim=-1)
        out["vit_last_hidden_norm"] = {
            "last_over_median": round(float((norms[:, LAST] / norms.median(1).values).mean()), 2),
            "projected_last_over_median": round(float((projected[:, LAST] / projected.median(1).values).mean()), 2),
            "patches_among_each_images_top3": sorted(set(norms.topk(3, dim=1).indices.reshape(-1).tolist()))}
        # the language model's attention to each image position: the patches in their order, then reversed
        # (patch 195's features first): does the attention stay at the last position or follow the features?
        for name, order in (("in_order", list(range(197))), ("patches_reversed", [0, *range(196, 0, -1)])):
            x = prompt_embeds(model, head, tail, feats[:, order])
            maps = torch.stack(lm(inputs_embeds=x, output_attentions=True).attentions)  # (layers, B, heads, N, N)
            for who, rows in (("predicting_position", slice(-1, None)), ("text_after_the_image", slice(end, None))):
                received = maps[:, :, :, rows, first:end].mean((0, 2, 3))  # (B, 196 positions)
                received = received / received.sum(1, keepdim=True)
                out[f"lm_attention_{name}_from_{who}"] = {
                    "last_position_share": round(float(received[:, -1].mean()), 4),
                    "last_position_is_max": round(float((received.argmax(1) == LAST).float().mean()), 3),
                    "first_position_share": round(float(received[:, 0].mean()), 4)}
    out["seconds"] = round(time.time() - started, 1)
    out["command"] = "python benchmarks/vlm_position.py --data ../shared/data" + (
        f" --every {args.every}" if args.every != 40 else "")
    print(json.dumps(out, indent=1))
    if args.json:
        write_json(args.json, out)


if __name__ == "__main__":
    main()
