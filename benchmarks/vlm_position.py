"""Do the LLaVA stand-in's maps favour some image tokens whatever the image shows? (the four corners)

Every 40th image of the sample (25 images), "What is in this photo?", the stand-in's greedy next token explained.
For each method and reading: the mean share of the map's positive relevance on each corner patch (0, 13, 182,
195; uniform: 1/196 = 0.005) and how often a corner holds the map's maximum; the same for the images turned by
180 degrees (the image's content moves to the opposite corner); the same for the shipped ViT-Ti's own maps of
its top class (``attngrad.Explainer``). Then what the models do there: the norm of the ViT's last hidden state
at each corner against the median patch (high-norm tokens are the artefact of Darcet et al., "Vision Transformers
Need Registers", ICLR 2024) and after the projector; and the share of the language model's attention (mean over
layers, heads and the text after the image) on each corner patch and on the last image position, with the patches
in their order and in a seeded shuffle that puts a patch other than a corner last: attention that stays at the
last position follows the position, attention that moves with the corners follows their features. Last,
el1's " zebra" (language reading) on the zebra and on the elephant with and without patch 195.

    python benchmarks/vlm_position.py --data ../shared/data --json docs/results/vlm/position.json \
        --png docs/images/vlm_position.png
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
from vlm_cells import region_shares  # noqa: E402

from attngrad import Explainer  # noqa: E402
from attngrad.vlm import VLMExplainer  # noqa: E402
from attngrad.vlm.load import stand_in_settings  # noqa: E402

QUESTION = "What is in this photo?"
CORNERS = (0, 13, 182, 195)  # the 14 x 14 grid's corners, row-major; 195 is the last image token


def mean_share(maps: torch.Tensor) -> torch.Tensor:
    """maps: (B, 14, 14) or (B, 196) signed maps -> (B, 196): each map's positive part as shares of its sum."""
    positive = maps.reshape(maps.shape[0], -1).float().clamp(min=0)
    return positive / positive.sum(1, keepdim=True).clamp(min=1e-12)


def corner_stats(maps: torch.Tensor) -> dict:
    """Each corner's mean share of the positive part, and how often a corner (and the last one) is the maximum."""
    flat = maps.reshape(maps.shape[0], -1).float()
    share = mean_share(maps)
    top = flat.argmax(1)
    return {"corner_shares": {str(c): round(float(share[:, c].mean()), 4) for c in CORNERS},
            "corner_is_max": round(float(torch.isin(top, torch.tensor(CORNERS)).float().mean()), 3),
            "last_is_max": round(float((top == CORNERS[-1]).float().mean()), 3)}


def draw(grids: dict[str, torch.Tensor], path: Path, images: int) -> None:
    """One panel per method and reading: the mean share of the positive relevance per patch (uniform: 1/196)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(grids), figsize=(3.1 * len(grids), 3.4), constrained_layout=True)
    top = max(float(g.max()) for g in grids.values())
    for ax, (name, g) in zip(axes, grids.items()):
        shown = ax.imshow(g.numpy(), cmap="magma", vmin=0, vmax=top)
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(shown, ax=axes, shrink=0.8, label="mean share of the positive map")
    fig.suptitle(f"LLaVA stand-in, {images} images: where the positive relevance goes on average (uniform 0.005)",
                 fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--every", type=int, default=40, help="take every N-th image of the sample (sorted by name)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--png", type=Path, default=None, help="a picture of the mean share per patch, per method and reading")
    args = ap.parse_args()
    started = time.time()
    files = [str(f) for f in sorted((args.data / "imagenet-sample").glob("*.jpg"))[:: args.every]]
    ex = VLMExplainer.from_pretrained(quiet=True)
    pixels = ex.pixels(files)
    out: dict = {"images": len(files), "question": QUESTION, "uniform_share": round(1 / 196, 4)}
    for name, px in (("upright", pixels), ("turned_180", pixels.flip(-1, -2))):
        res = ex.explain_methods(px, QUESTION, ["complete", "gae"], readings=("language", "vision"))
        out[f"vlm_{name}"] = {f"{m}/{r}": corner_stats(e.maps) for (m, r), e in res.items()}
        if name == "upright":
            grids = {f"{m}/{r}": mean_share(e.maps).mean(0).reshape(14, 14) for (m, r), e in res.items()}
    vit = Explainer.from_pretrained()
    out["vit_alone"] = {m: corner_stats(vit.explain(files, method=m).maps) for m in ("complete", "gae")}
    model = ex.adapter.model
    lm = model.model.language_model
    lm.config._attn_implementation = "eager"
    head, tail, _ = sequences(ex.adapter.tokenizer, stand_in_settings()["template"], QUESTION, [])
    first, end = len(head) + 1, len(head) + 197  # the 196 patch tokens (the class token before them left out)
    with torch.no_grad():
        feats = model.model.vision_tower(pixels, output_hidden_states=True).hidden_states[-1]  # (B, 197, D)
        norms = feats[:, 1:].norm(dim=-1)  # (B, 196)
        projected = model.model.multi_modal_projector(feats[:, 1:]).norm(dim=-1)
        out["vit_last_hidden_norm_over_median"] = {
            str(c): round(float((norms[:, c] / norms.median(1).values).mean()), 1) for c in CORNERS}
        out["projected_norm_over_median"] = {
            str(c): round(float((projected[:, c] / projected.median(1).values).mean()), 1) for c in CORNERS}
        shuffle = torch.randperm(196, generator=torch.Generator().manual_seed(0)).tolist()
        assert shuffle[-1] not in CORNERS  # seed 0 puts patch 82 last
        for name, order in (("in_order", list(range(196))), ("shuffled", shuffle)):
            x = prompt_embeds(model, head, tail, feats[:, [0, *(i + 1 for i in order)]])
            maps = torch.stack(lm(inputs_embeds=x, output_attentions=True).attentions)  # (layers, B, heads, N, N)
            received = maps[:, :, :, end:, first:end].mean((0, 2, 3))  # (B, 196 positions), from the text after
            received = received / received.sum(1, keepdim=True)
            where = {patch: position for position, patch in enumerate(order)}
            out[f"lm_attention_{name}"] = {
                "last_position": {"patch": order[-1], "share": round(float(received[:, -1].mean()), 4)},
                "corners": {str(c): {"position": where[c], "share": round(float(received[:, where[c]].mean()), 4)}
                            for c in CORNERS}}
    # el1's " zebra", language reading, on the regions of vlm_cells.py --el1, with and without patch 195
    m = ex.explain("el1", "What animal is this?", target=" zebra", reading="language").maps[0].clamp(min=0)
    without = m.clone()
    without[13, 13] = 0
    out["el1_zebra_language"] = {"with_patch_195": region_shares(m), "without_patch_195": region_shares(without)}
    out["mean_share_grids"] = {k: [[round(float(v), 4) for v in row] for row in g] for k, g in grids.items()}
    if args.png:
        draw(grids, args.png, len(files))
    out["seconds"] = round(time.time() - started, 1)
    out["command"] = "python benchmarks/vlm_position.py --data ../shared/data" + (
        f" --every {args.every}" if args.every != 40 else "")
    print(json.dumps(out, indent=1))
    if args.json:
        write_json(args.json, out)


if __name__ == "__main__":
    main()
