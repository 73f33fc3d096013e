#!/usr/bin/env bash
# The GPU checks in one go, for a machine with a CUDA GPU and torch (Ray optional: see below).
#
#   bash benchmarks/gpu_check.sh               # the GPU checks + the speed benchmark at full size, ~8 min on an H100
#   QUICK=1 bash benchmarks/gpu_check.sh       # the quick size (a smoke test of this script)
#   DIFFICULTY=1 bash benchmarks/gpu_check.sh  # also the synthetic difficulty benchmark at 8528 records x 20 epochs
#   SPEED_TIMEOUT=420 bash ...                 # stop the speed benchmark after that many seconds (its --json keeps the parts done)
#   AHEAD=1 bash ...                           # also the seed grid with resources.trials_ahead 0 (off; Train workers are then reused) to compare with auto
#   SHORT=1 bash ...                           # the grid parts only (no loop checks or timings, no ASHA): ~8 min with AHEAD=1
#
# Where the machine has torch but no Ray (the project's lent GPU machines), build a Ray bundle
# here first with ../shared/tools/device-ray-bundle and carry .device/ with the tree: this script
# unpacks it. It prints what `nvidia-smi` and torch see, runs the trial loop and tests that need
# CUDA (determinism on the GPU: two runs, same numbers), then benchmarks/speed.py --gpu (the
# notebook's loop, ecg_ray's loop, the seed grid through `ecg-ray tune` with auto GPU packing,
# plain Ray Tune, and ASHA against no early stopping), optionally benchmarks/difficulty.py at 8528
# records, and leaves JSON and the tuning runs' logs under ${OUT:-.}/.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-.}
if ! python3 -c "import ray" 2>/dev/null && [ -f .device/ray-site.tar.xz ]; then
  mkdir -p /tmp/site && tar -xJf .device/ray-site.tar.xz -C /tmp/site
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONPATH=${PYTHONPATH:-$PWD} RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
python3 - <<'PY'
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "device", torch.cuda.get_device_name(0))
PY

if [ -z "${SHORT:-}" ]; then
echo "== the trial loop on CUDA: two runs of one trial, bit for bit (fp32, bf16, channels_last)"
python3 - <<'PY'
import time, torch
from ecg_ray.config import TrialConfig, load_experiment
from ecg_ray.data.prepare import prepare
from ecg_ray.training.loop import build_trial, run_epoch
data = prepare(load_experiment("experiments/quick.yaml", **{"data.n_records": 2000}))
for name, options in (("fp32", {}), ("bf16", {"precision": "bf16"}), ("channels_last", {"channels_last": True})):
    runs = []
    for _ in range(2):
        state = build_trial(TrialConfig(lr=1e-3, hidden_size=256, dropout=0.3, **options), data.weights, "cuda")
        start = time.perf_counter()
        runs.append([run_epoch(state, data, 32) for _ in range(3)])
        print(f"{name}: 3 epochs in {time.perf_counter() - start:.2f} s; resident on "
              f"{sorted({str(t[0].device) for k, t in state.resident.items() if k != 'data'})}")
    print(f"{name}: identical: {runs[0] == runs[1]}; last epoch {runs[0][-1]}")
    assert runs[0] == runs[1], f"two CUDA runs of one trial differ ({name})"
PY
fi

limit=${SPEED_TIMEOUT:+timeout $SPEED_TIMEOUT}
# A speed run stopped by SPEED_TIMEOUT keeps its parts in --json; the script goes on to the next part.
stopped() { echo "== that speed run stopped (exit $1; SPEED_TIMEOUT=${SPEED_TIMEOUT:-none}): its --json holds the parts done"; }
if [ -n "${QUICK:-}" ]; then
  $limit python3 benchmarks/speed.py --gpu --quick --json "$out/speed_gpu_quick.json" || stopped $?
elif [ -n "${SHORT:-}" ]; then
  $limit python3 benchmarks/speed.py --gpu --grid seed --epochs 20 --no-loops --json "$out/speed_gpu.json" || stopped $?
else
  $limit python3 benchmarks/speed.py --gpu --grid seed --epochs 20 --asha --json "$out/speed_gpu.json" || stopped $?
fi
if [ -n "${AHEAD:-}" ]; then
  echo "== the seed grid without trials started ahead (resources.trials_ahead: 0: each slot's Train worker reused), against auto above"
  $limit python3 benchmarks/speed.py --gpu --grid seed --epochs 20 --no-loops --no-plain-tune \
    --trials-ahead 0 --json "$out/speed_gpu_ahead0.json" || stopped $?
fi
if [ -n "${DIFFICULTY:-}" ]; then
  echo "== the realistic synthetic data at the calibration target (8528 records, 20 epochs)"
  python3 benchmarks/difficulty.py --gpu --records 8528 --epochs 20 --sets realistic easy --json "$out/difficulty_gpu.json"
fi
