#!/usr/bin/env bash
# Every CUDA path of truthinmotion in one run of a few minutes on one GPU, through the `tim`
# command line, each compared with the same work on the CPU where it can be:
#
#   faces     MTCNN on CUDA vs on the CPU (box IoU)
#   features  RAFT-small on CUDA; Depth Anything V2 under fp16 autocast on CUDA vs fp32 on the CPU
#   train     DINOv2-small with autocast bf16 (the default on GPU), fp16 (gradient scaler) and off
#   ddp       torchrun, NCCL backend (one process per GPU; one GPU runs the collectives at world 1)
#   compress  fp16, bf16, compile, onnx (says where ONNX Runtime runs), int8, distill
#   evaluate  and detect on CUDA vs on the CPU (video scores, verdict probabilities; detect on the
#             CPU runs depth and the detector in ONNX Runtime, its default there, on CUDA PyTorch)
#   speed     tim benchmark of the variants, benchmarks/train.py, features.py, detect.py and scale.py
#   batched   tim detect --workers/--batch-size and --engine ray (when Ray is installed) vs one at a time
#
# Weights are random (nothing can be downloaded): the checks are of the code paths and of the
# agreement between devices, the speeds of the architectures; accuracy is not measured here.
#
#   bash benchmarks/gpu_check.sh [OUTDIR]        # OUTDIR: /tmp/tim-gpu-check
#
# Environment: PYTHON (python3); TIM_DATA, a folder of real videos for detect.py (its 1080p
# ones are timed) and for detect on a real face; WHEELS, a folder of wheels to install first
# (facenet-pytorch on a machine that has torch but not it); DEVICE (cuda), BACKBONE
# (dinov2-small) and SIZE (224): DEVICE=cpu BACKBONE=dinov2-tiny SIZE=56 tries the script itself
# on a CPU in a few minutes (fp16 is refused there: those checks fail). Prints PASS/FAIL per
# check and the benchmarks' JSON; exits with the number of failed checks.
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${1:-/tmp/tim-gpu-check}
PY=${PYTHON:-python3}
DEV=${DEVICE:-cuda}
LOGS=$OUTDIR/logs
mkdir -p "$LOGS"
if [ -n "${WHEELS:-}" ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/tim-site "$WHEELS"/*.whl || exit 100
    export PYTHONPATH=/tmp/tim-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
tim() { "$PY" -m truthinmotion "$@"; }
failed=0

# check NAME COMMAND...: run it, log it, say PASS or FAIL with its time and last lines.
check() {
    local name=$1; shift
    local t0=$SECONDS
    if "$@" >"$LOGS/$name.log" 2>&1; then
        echo "PASS $name ($((SECONDS - t0)) s)"
    else
        echo "FAIL $name ($((SECONDS - t0)) s): last lines of $LOGS/$name.log"
        tail -n 15 "$LOGS/$name.log" | sed 's/^/    /'
        failed=$((failed + 1))
    fi
}
# show NAME: each JSON document the log's command printed, on one line (3000 characters at most)
show() {
    "$PY" - "$LOGS/$1.log" <<'EOF'
import json, sys
text, at = open(sys.argv[1], errors="replace").read(), 0
for line in text.splitlines(keepends=True):
    if line.startswith("{"):
        try:
            print("    " + json.dumps(json.JSONDecoder().raw_decode(text[at:])[0])[:3000])
        except ValueError:
            pass
    at += len(line)
EOF
}

"$PY" - <<'EOF' || exit 101
import torch, onnxruntime, transformers
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, transformers {transformers.__version__}, "
      f"onnxruntime {onnxruntime.__version__} providers {onnxruntime.get_available_providers()}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"GPU {p.name}, {p.total_memory / 2**30:.0f} GiB, bf16 {torch.cuda.is_bf16_supported()}")
else:
    print("no CUDA device")
EOF

W=$OUTDIR/work; C=$OUTDIR/work-cpu; R=$OUTDIR/runs
rm -rf "$W" "$C" "$R" "$OUTDIR/eval-"* "$OUTDIR/detect-"*
check data "$PY" -c "
from pathlib import Path; import torch
from truthinmotion.apps.demo import make_demo_data
from truthinmotion.features import depth_anything_config
from truthinmotion.backends.weights import save_random_model
from transformers import DepthAnythingForDepthEstimation
make_demo_data(Path('$OUTDIR/data'), clips=10, frames=24)
torch.manual_seed(0)
save_random_model(DepthAnythingForDepthEstimation(depth_anything_config('depth-anything-v2-small')), Path('$OUTDIR/da-small'))"
check index tim index "$OUTDIR/data" -o "$W" --format folder
cp -r "$W" "$C"
check faces-$DEV tim faces "$W" --points 8 --device $DEV -q
check faces-cpu tim faces "$C" --points 8 --device cpu --workers 4 -q
check faces-compare "$PY" benchmarks/gpu_compare.py faces "$W" "$C"; show faces-compare
check features-$DEV tim features "$W" --depth "$OUTDIR/da-small" --depth-size 224 --device $DEV -q
check features-cpu tim features "$C" --depth "$OUTDIR/da-small" --depth-size 224 --device cpu --workers 4 -q
check depth-compare "$PY" benchmarks/gpu_compare.py depth "$W" "$C" da-small; show depth-compare
check raft-$DEV tim features "$W" --flow raft-small --init random --depth none --device $DEV -q

TRAIN=(--backbone ${BACKBONE:-dinov2-small} --image-size ${SIZE:-224} --init random --modality flow+depth --depth da-small --epochs 2
       --batch-size 8 --train-points 4 --lr 1e-3 --workers 2 --device $DEV -q)
for amp in bf16 fp16 off; do
    check "train-$amp" tim train "$W" -o "$R/$amp" --autocast "$amp" "${TRAIN[@]}"
    check "train-$amp-losses" "$PY" benchmarks/gpu_compare.py train "$R/$amp"; show "train-$amp-losses"
done
check ddp-nccl "$PY" -m torch.distributed.run --nproc_per_node 1 --master_port 29611 -m truthinmotion \
    train "$W" -o "$R/ddp" "${TRAIN[@]}"
check ddp-backend grep -q "$([ "$DEV" = cpu ] && echo gloo || echo nccl) backend" "$R/ddp/train.log"

for m in fp16 bf16 compile onnx int8; do
    check "compress-$m" tim compress "$R/off" --method "$m" -o "$R/off-$m" --device $DEV
done
grep -h "CPU\|provider" "$LOGS/compress-onnx.log" | sed 's/^/    onnx: /'
check distill tim compress "$R/off" --method distill --student ${BACKBONE:-dinov2-small} --epochs 1 -o "$R/distill" --device $DEV -q

check evaluate-cuda tim evaluate "$R/off" --device $DEV --out "$OUTDIR/eval-cuda" -q
check evaluate-cpu tim evaluate "$R/off" --device cpu --out "$OUTDIR/eval-cpu" -q
check evaluate-compare "$PY" benchmarks/gpu_compare.py evaluate "$OUTDIR/eval-cuda" "$OUTDIR/eval-cpu"; show evaluate-compare
VIDEOS=("$OUTDIR"/data/fake/fake000.mp4 "$OUTDIR"/data/real/real000.mp4)
if [ -n "${TIM_DATA:-}" ]; then VIDEOS+=("$TIM_DATA"); fi
check detect-cuda tim detect "${VIDEOS[@]}" --model "$R/off" --device $DEV --json "$OUTDIR/detect-cuda.json" -q
check detect-cpu tim detect "${VIDEOS[@]}" --model "$R/off" --device cpu --json "$OUTDIR/detect-cpu.json" -q
check detect-compare "$PY" benchmarks/gpu_compare.py detect "$OUTDIR/detect-cuda.json" "$OUTDIR/detect-cpu.json"
show detect-compare
# Batched scoring across videos (CPU workers feeding the model stage on the GPU), locally and on
# Ray (when installed): the same verdicts as one video at a time.
check detect-batched tim detect "${VIDEOS[@]}" --model "$R/off" --device $DEV --workers 2 --batch-size 128 \
    --json "$OUTDIR/detect-batched.json" -q
check detect-batched-compare "$PY" benchmarks/gpu_compare.py detect "$OUTDIR/detect-batched.json" "$OUTDIR/detect-cuda.json"
if "$PY" -c "import ray.data" 2>/dev/null; then
    check detect-ray tim detect "${VIDEOS[@]}" --model "$R/off" --device $DEV --engine ray --ray-gpus 0.5 --workers 2 \
        --json "$OUTDIR/detect-ray.json" -q
    check detect-ray-compare "$PY" benchmarks/gpu_compare.py detect "$OUTDIR/detect-ray.json" "$OUTDIR/detect-cuda.json"
fi

# Paths added on 2026-11-30, not yet run on a GPU: robustness (the whole pipeline on perturbed
# copies), export with a compressed variant checked on the device, pseudo-fakes with MTCNN on it
# (on the CPU copy of the work directory, so that the runs above keep their fakes).
if "$PY" -c "import av" 2>/dev/null; then
    check robustness-$DEV tim robustness "$R/off" --perturbations gb,vc --levels 1,5 --device $DEV \
        --out "$OUTDIR/robustness" -q
fi
check evaluate-run tim evaluate "$R/off" --device $DEV -q
rm -rf "$OUTDIR/export"
check export tim export "$R/off" "$OUTDIR/export" --variants bf16 --device $DEV
check synth-$DEV tim synth "$C" --per-video 1 --device $DEV -q

echo "== speed (ratios against the baseline of the same run)"
check benchmark-variants tim benchmark "$R/off" "$R/off-bf16" "$R/off-fp16" "$R/off-compile" "$R/off-onnx" \
    --device $DEV --repeats 20 --out "$OUTDIR/benchmark"
sed 's/^/    /' "$OUTDIR/benchmark/benchmark.md" 2>/dev/null
check bench-train "$PY" benchmarks/train.py --device $DEV --batch 64 --steps 5
show bench-train
check bench-inference "$PY" benchmarks/inference.py --device $DEV --variants fp32,bf16,fp16,compile --repeats 20
show bench-inference
check bench-features "$PY" benchmarks/features.py --device $DEV --pairs 16 --repeats 1
show bench-features
if [ -n "${TIM_DATA:-}" ]; then
    check bench-detect "$PY" benchmarks/detect.py --device $DEV --data "$TIM_DATA"
    show bench-detect
    check bench-scale "$PY" benchmarks/scale.py --device $DEV --data "$TIM_DATA"
    show bench-scale
fi
echo "$failed check(s) failed; logs in $LOGS"
exit "$failed"
