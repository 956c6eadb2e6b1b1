"""Average two projectors trained from one start (a "model soup", Wortsman et al. 2022): ``(1 - w) * A + w * B``.

    python scripts/average_projectors.py A/projector.safetensors B/projector.safetensors --weight 0.7 --out OUT.safetensors

Both files must hold the same tensors (names and shapes), as ``scripts/train_vlm.py`` writes them; the average is
written in float16, as the stand-in's projector ships.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def average(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], weight: float) -> dict[str, torch.Tensor]:
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        raise SystemExit("average_projectors: error: the two projectors hold different tensors")
    return {k: ((1 - weight) * a[k].float() + weight * b[k].float()).half().contiguous() for k in a}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--weight", type=float, required=True, help="B's share, in [0, 1]")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if not 0 <= args.weight <= 1:
        ap.error("--weight is a share, in [0, 1]")
    save_file(average(load_file(str(args.a)), load_file(str(args.b)), args.weight), str(args.out))


if __name__ == "__main__":
    main()
