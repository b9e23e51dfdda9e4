#!/usr/bin/env bash
# Builds the release binary (CUDA backend compiled in) and, on a machine with an NVIDIA GPU, runs short
# training jobs of a few configurations, printing planned vs measured peak memory and samples/s.
# Without a GPU it builds, says so and exits 2, so a CI job can tell "no GPU" from "failed".
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --bin voxplan
BIN=target/release/voxplan

if ! ldconfig -p 2>/dev/null | grep -q 'libcuda\.so' && ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "gpu-check: no NVIDIA driver (libcuda.so not found, no nvidia-smi): built only, nothing to measure" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total,memory.free --format=csv

OUT=${GPU_CHECK_OUT:-target/gpu-check}
rm -rf "$OUT"; mkdir -p "$OUT"

# name | network stages | patch | precision | checkpointing
CONFIGS=(
  "small-f32|[16,32,64,128]|[64,64,64]|f32|never"
  "small-bf16|[16,32,64,128]|[64,64,64]|bf16|never"
  "large-bf16|[32,64,128,256,320]|[128,128,128]|bf16|never"
  "large-ckpt|[32,64,128,256,320]|[128,128,128]|bf16|always"
)
for entry in "${CONFIGS[@]}"; do
  IFS='|' read -r name features patch precision ckpt <<<"$entry"
  stages=$(python3 -c "
f=$features
print(', '.join('{ features = %d, stride = [%d, %d, %d] }' % ((x,) + ((1,1,1) if i == 0 else (2,2,2))) for i, x in enumerate(f)))")
  cfg="$OUT/$name.toml"
  cat >"$cfg" <<TOML
name = "gpu-check-$name"
seed = 1
[network]
in_channels = 1
num_classes = 4
norm = { kind = "instance" }
stages = [ $stages ]
[plan]
patch_size = $patch
target_effective_batch = 2
precision = "$precision"
checkpointing = "$ckpt"
[data]
source = { kind = "phantom", cases = 6, shape = [160, 160, 160], structures = 3, seed = 7 }
validation_fraction = 0.2
[loader]
workers = 4
[train]
epochs = 1
steps_per_epoch = 20
max_validation_cases = 1
TOML
  echo "== $name"
  if "$BIN" train --config "$cfg" --device cuda:0 --run-dir "$OUT/$name" >"$OUT/$name.log" 2>&1; then
    grep -E "^(plan|memory|throughput|re-planned|skipped)" "$OUT/$name.log" || true
    python3 - "$OUT/$name/metrics.jsonl" <<'PY'
import json, sys
steps = [json.loads(l) for l in open(sys.argv[1]) if '"kind":"step"' in l]
steady = steps[2:] or steps
peak = max(s["peak_memory_measured_bytes"] for s in steady)
planned = steady[0]["peak_memory_planned_bytes"]
rate = sum(s["samples_per_s"] for s in steady) / len(steady)
drv = max((s.get("driver_used_bytes") or 0) for s in steady)
print(f"   planned {planned/2**20:.0f} MiB  measured (cubecl reserved) {peak/2**20:.0f} MiB  "
      f"driver used {drv/2**20:.0f} MiB  ratio {peak/planned:.2f}  {rate:.2f} samples/s")
PY
  else
    echo "   FAILED (see $OUT/$name.log)"; tail -5 "$OUT/$name.log"
  fi
done

# Data parallel (issue 13) when the machine has two cards or more: the first configuration on 2 cards against
# its 1-card run above, samples/s of each, and the plan's per-device batch.
gpus=$(nvidia-smi --query-gpu=index --format=csv,noheader | wc -l)
first="${CONFIGS[0]%%|*}"
if [ "$gpus" -ge 2 ]; then
  echo "== data parallel ($first on cuda:0,cuda:1)"
  if "$BIN" train --config "$OUT/$first.toml" --devices cuda:0,cuda:1 --run-dir "$OUT/$first-2gpu" \
      >"$OUT/$first-2gpu.log" 2>&1; then
    grep -E "^(device|plan|throughput)" "$OUT/$first-2gpu.log"
    grep -E "^throughput" "$OUT/$first.log" | sed 's/^/   one card: /'
  else
    echo "   FAILED (see $OUT/$first-2gpu.log)"; tail -5 "$OUT/$first-2gpu.log"
  fi
else
  echo "== data parallel: $gpus card(s), skipped (needs 2)"
fi

# predict on CUDA with the first configuration's best checkpoint: a fresh phantom case, labels and
# probabilities written on the input's grid, windows per pass from the inference planner.
first="${CONFIGS[0]%%|*}"
if [ -f "$OUT/$first/checkpoints/last/state.json" ]; then
  echo "== predict ($first checkpoint, cuda:0)"
  "$BIN" phantoms --out "$OUT/predict-in" --cases 1 --shape 160 160 160 --seed 11 >/dev/null
  if "$BIN" predict --checkpoint "$OUT/$first" --input "$OUT/predict-in/imagesTr" --output "$OUT/predict-out" \
      --probabilities --device cuda:0 >"$OUT/predict.log" 2>&1; then
    grep -E "windows|per pass|→" "$OUT/predict.log" || cat "$OUT/predict.log"
  else
    echo "   predict FAILED (see $OUT/predict.log)"; tail -5 "$OUT/predict.log"
  fi
fi

# Planner accuracy on CUDA (issue 5): every configuration of the CUDA zoo planned, then measured in its own
# child process (cubecl reserved bytes per step phase, and the driver's used memory); the table goes into
# docs/planner-accuracy.md with the date and the GPU. Then the calibration half is fitted and the hold-out
# half re-measured against the calibrated profile (the fit never sees the hold-out half).
echo "== planner accuracy (configs/zoo/cuda.toml)"
"$BIN" bench planner --device cuda --zoo configs/zoo/cuda.toml \
  --markdown "$OUT/planner-accuracy-cuda.md" --json "$OUT/planner-accuracy-cuda.json" \
  | tee "$OUT/planner-accuracy-cuda.txt" || echo "   bench planner FAILED"
echo "== calibrate (cuda, calibration half)"
if "$BIN" calibrate --device cuda --zoo configs/zoo/cuda.toml --out "$OUT/cuda-calibrated.toml"; then
  "$BIN" bench planner --device cuda --zoo configs/zoo/cuda.toml --profile "$OUT/cuda-calibrated.toml" \
    --markdown "$OUT/planner-accuracy-cuda-calibrated.md" | tee "$OUT/planner-accuracy-cuda-calibrated.txt" \
    || echo "   bench planner (calibrated) FAILED"
else
  echo "   calibrate FAILED"
fi
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); GPU: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"
