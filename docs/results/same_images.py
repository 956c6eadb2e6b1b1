"""AUCs of the committed runs restricted to the images of the paper-protocol run (the same images).

Each protocol's results come from two folders (the six methods; the LRP family). Run from the
repository root: ``python docs/results/same_images.py``.
"""
import numpy as np

from attngrad.evaluation import auc, load_results, per_image_curves

PROTOCOLS = {
    "paper's guided": ("perturbation-zebra-paper", "perturbation-lrp-zebra-paper"),
    "cropped guided": ("perturbation-zebra", "perturbation-lrp-zebra"),
    "plain": ("perturbation-plain", "perturbation-lrp-plain"),
}
METHODS = ("complete", "gae", "absolute", "rollout", "raw_attention", "attn_gradcam", "tattr", "partial_lrp", "lrp",
           "random")

keep = set(load_results("docs/results/perturbation-zebra-paper")["path"].tolist())
rows: dict[str, dict[str, list[float]]] = {}
for protocol, folders in PROTOCOLS.items():
    for folder in folders:
        raw = load_results(f"docs/results/{folder}")
        mask = np.array([p in keep for p in raw["path"].tolist()])
        sub = {k: v[mask] for k, v in raw.items() if not k.startswith("failed_")}
        print(folder, mask.sum(), "images; accuracy at 0 %:", round(100 * float((sub["pred0"] == sub["label"]).mean()), 1))
        for m in METHODS:
            if f"{m}.positive.correct" in sub:
                rows.setdefault(m, {})[protocol] = [auc(per_image_curves(sub, m, d).mean(0)) for d in ("positive", "negative")]
for m, e in rows.items():
    cells = [f"{v:.2f}" for p in PROTOCOLS for v in e.get(p, [float("nan")] * 2)]
    print(f"| {m} | " + " | ".join(cells).replace("nan", "–") + " |")
