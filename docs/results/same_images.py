"""AUCs of the committed 999/1000-image runs restricted to the images of the paper-protocol run (same images)."""
import numpy as np
from attngrad.evaluation import load_results, per_image_curves, auc

paper = load_results("docs/results/perturbation-zebra-paper")
keep = set(paper["path"].tolist())
rows = {}
for name in ("perturbation-zebra-paper", "perturbation-zebra", "perturbation-plain"):
    raw = load_results(f"docs/results/{name}")
    mask = np.array([p in keep for p in raw["path"].tolist()])
    sub = {k: v[mask] for k, v in raw.items() if not k.startswith("failed_")}
    print(name, mask.sum(), "images; accuracy at 0 %:", round(100 * float((sub["pred0"] == sub["label"]).mean()), 1))
    for m in ("complete", "gae", "absolute", "rollout", "raw_attention", "attn_gradcam", "random"):
        if f"{m}.positive.correct" in sub:
            rows.setdefault(m, {})[name] = [auc(per_image_curves(sub, m, d).mean(0)) for d in ("positive", "negative")]
for m, e in rows.items():
    cells = [f"{v:.2f}" for n in ("perturbation-zebra-paper", "perturbation-zebra", "perturbation-plain")
             for v in e.get(n, [float("nan")] * 2)]
    print(f"| {m} | " + " | ".join(cells) + " |")
