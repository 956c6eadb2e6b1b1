# Shared by the device scripts (grid_gpu.sh, device_checks.sh): timed stages and float32 everywhere.
# Expects OUT and BUDGET set, and START=$(date +%s), before it is sourced.

left() { echo $((BUDGET - ($(date +%s) - START))); }

stage() {  # stage NAME SECONDS COMMAND...: run COMMAND for at most SECONDS, its output in OUT/NAME.log
  local name=$1 secs=$2
  shift 2
  if [ "$secs" -lt 5 ]; then echo "== $name: skipped (no time left)"; return; fi
  echo "== $name: up to ${secs}s ($(left)s left)"
  local t0
  t0=$(date +%s)
  timeout --signal=INT --kill-after=10 "$secs" "$@" >"$OUT/$name.log" 2>&1
  echo "== $name: exit $? after $(($(date +%s) - t0))s"
  tail -n 25 "$OUT/$name.log"
}

# float32 everywhere: a sitecustomize that switches TF32 off in every Python process of the script
NOTF32=$(mktemp -d)
cat >"$NOTF32/sitecustomize.py" <<'PYEOF'
import torch
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False
PYEOF
export PYTHONPATH="$NOTF32${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}  # the interpreter that has torch (and attngrad, or src on PYTHONPATH)
