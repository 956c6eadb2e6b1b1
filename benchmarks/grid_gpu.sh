#!/usr/bin/env bash
# The grid pointing game's expensive rows (issue 23) and the GPU half of the speed table (issue 21), as one
# script with a time budget for a lent GPU machine. Every stage stops at its share of the budget; the grid
# stages are resumable (`attngrad evaluate grid --resume`), so a stage cut short continues elsewhere.
#
#   bash benchmarks/grid_gpu.sh DATA OUT [SECONDS] [DEVICE]
#
# DATA: the ImageNet sample folder (or only its images that qualify: the same grids are drawn, see
# docs/results/grid.md); OUT: results folder; SECONDS: overall budget (default 540); DEVICE: default cuda.
# The peers (grad-cam, ttach, captum) must be importable for the peer stage (PYTHONPATH). TF32 is off in
# every stage (float32 as on the CPU), so that the images that qualify, and so the grids, are the CPU's.
set -u
DATA=$1
OUT=$2
BUDGET=${3:-540}
DEVICE=${4:-cuda}
GRIDS=${GRIDS:-250}  # grids per stage (a smaller number rehearses the script)
HERE=$(cd "$(dirname "$0")" && pwd)
START=$(date +%s)
mkdir -p "$OUT"
# shellcheck source=_stages.sh
source "$HERE/_stages.sh"
AG=("$PY" -m attngrad)

RIVALS=complete,gae,tam,bi,bi_token,dix,vitcx,lrp,ig,grad_x_input,random

# 1. every method runs on the device (crashes show here first; exactness is stage 3)
stage smoke 60 "$PY" - "$DEVICE" "$OUT/methods-ok.txt" <<'EOF'
import sys, time, torch
from attngrad import METHODS, Explainer
from attngrad.demo import asset_image
print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else "no cuda")
ex = Explainer.from_pretrained(device=sys.argv[1])
x = torch.cat([ex.prepare(asset_image(n))[0] for n in ("el1.jpg", "catdog.png")]).to(ex.device)
ok = []
for m in METHODS:
    t = time.perf_counter()
    try:
        maps = ex.explain_methods(x, [m], target=[340, 243])[m].maps
        print(f"OK {m} {tuple(maps.shape)} finite={bool(torch.isfinite(maps).all())} {time.perf_counter() - t:.2f}s")
        ok.append(m)
    except Exception as e:  # noqa: BLE001 - report every method's failure, go on
        print(f"FAIL {m}: {type(e).__name__}: {e}"[:400])
open(sys.argv[2], "w").write(",".join(ok))
EOF
ok() {  # the methods of a comma list that ran in the smoke stage
  "$PY" -c 'import sys; ok = open(sys.argv[1]).read().split(","); print(",".join(m for m in sys.argv[2].split(",") if m in ok))' \
    "$OUT/methods-ok.txt" "$1"
}

# 2. the expensive rivals on the 250 grids of the main run (more sequences per pass than the CPU defaults)
RIV=$(ok $RIVALS)
BIG=()
for m in tam bi bi_token dix vitcx ig; do
  case ",$RIV," in *",$m,"*) BIG+=(--method-option "$m.batch_size=512") ;; esac
done
stage grid-rivals $(($(left) - 300)) "${AG[@]}" evaluate grid --data "$DATA" --grids "$GRIDS" --batch-size 25 \
  --methods "$RIV" "${BIG[@]}" --device "$DEVICE" --out "$OUT/grid-rivals"

# 3. CPU = GPU for every method
stage cuda-tests 90 "$PY" -m pytest -q -p no:cacheprovider "$HERE/../tests/test_cuda.py"

# 4. the outside rows (pytorch-grad-cam, Captum) on the same 250 grids, integrated gradients on all of them
stage peers 80 "$PY" "$HERE/grid_peers.py" --data "$DATA" --grids "$GRIDS" --ig-grids "$GRIDS" --batch-size 25 \
  --ig-batch 1000 --device "$DEVICE" --json "$OUT/peers.json"

# 5. issue 21's speed table on the device: every method at batch 16, ratio to forward+backward, peak memory
stage speed 70 "$PY" "$HERE/explain_speed.py" --device "$DEVICE" --batch-sizes 16 --repeats 10 \
  --rival-repeats 2 --methods "$(cat "$OUT/methods-ok.txt")" \
  --json "$OUT/explain-speed.json"

# 6. TIS (1,024 masked passes per explanation) with what is left
stage grid-tis $(($(left) - 15)) "${AG[@]}" evaluate grid --data "$DATA" --grids "$GRIDS" --batch-size 25 \
  --methods "$(ok tis,complete,random)" --method-option tis.batch_size=4096 --device "$DEVICE" --out "$OUT/grid-tis"
echo "== done after $(($(date +%s) - START))s"
