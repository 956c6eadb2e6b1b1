#!/usr/bin/env bash
# The checks that need a GPU, as one script with a time budget for a lent machine: every CUDA test (each
# family's maps on the GPU equal the CPU's) and the GPU half of the language-model speed table (issue 21).
#
#   bash benchmarks/device_checks.sh LM_CONFIG OUT [SECONDS] [DEVICE]
#
# LM_CONFIG: a folder with a causal LM's config.json and tokenizer (SmolLM2-135M-Instruct's: speed and memory do
# not depend on the weights, so a randomly initialised model of the same shape is timed; nothing to download);
# OUT: results folder; SECONDS: overall budget (default 300); DEVICE: default cuda.
set -u
CONFIG=$1
OUT=$2
BUDGET=${3:-300}
DEVICE=${4:-cuda}
LENGTHS=${LENGTHS:-1024,2048}  # the timed lengths (each case in a fresh process); LONG: the longest, once
LONG=${LONG:-8192}
HERE=$(cd "$(dirname "$0")" && pwd)
START=$(date +%s)
mkdir -p "$OUT"
# shellcheck source=_stages.sh
source "$HERE/_stages.sh"

# 1. CPU = GPU, every family (tests/test_cuda.py and the families' test_on_cuda.py)
stage cuda-tests 150 "$PY" -m pytest -q -p no:cacheprovider -rf "$HERE/../tests/test_cuda.py" \
  $(find "$HERE/../tests" -name "test_on_cuda.py" | sort)

# 2. a random model of the LM's shape, saved once
MODEL=$(mktemp -d)/lm
stage lm-model 60 "$PY" - "$CONFIG" "$MODEL" <<'EOF'
import sys, torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
torch.manual_seed(0)
AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(sys.argv[1])).save_pretrained(sys.argv[2])
AutoTokenizer.from_pretrained(sys.argv[1]).save_pretrained(sys.argv[2])
print("saved", sys.argv[2])
EOF

# 3. time and peak memory of complete (kept, maps streamed, layers streamed) against forward+backward
stage lm-speed $(($(left) - 100)) "$PY" "$HERE/lm_speed.py" --model "$MODEL" --device "$DEVICE" --lengths "$LENGTHS" \
  --repeat 3 --sdpa --cases fwd_bwd,fwd_bwd_sdpa,complete,complete_maps,complete_layers --json "$OUT/lm-speed.json"
# 4. the longest prompt once (the eager forward+backward would hold every layer's maps: left out)
stage lm-speed-long $(($(left) - 10)) "$PY" "$HERE/lm_speed.py" --model "$MODEL" --device "$DEVICE" --lengths "$LONG" \
  --repeat 1 --sdpa --cases fwd_bwd_sdpa,complete_maps,complete_layers --json "$OUT/lm-speed-long.json"
echo "== done after $(($(date +%s) - START))s"
