#!/usr/bin/env bash
# Runs on the lent GPU machine (no Node, no npm there): unpacks the carried Node, dawn.node and
# Vulkan loader, then runs the op/ViT tests, the HF+PEFT parity check (both directions, plain
# and dual-projection adapters) and the bench on the GPU.
# Carry: device-carry/gpu and test/gpu-bundle (built by scripts/gpu-check/build.sh).
#   [STAGES='tests parity autotune torch bench robustness'] bash scripts/gpu-check/device.sh [bench flags...]
# (default stages: tests parity bench; torch = the PyTorch + PEFT peer of the train step,
# bench/peer-torch/gmail_step.py, whose rows go to $OUT/torch-peer.json and, when the bench stage
# follows, into the bench JSON through --torch-rows; robustness = the square matmuls again with
# Dawn's disable_robustness toggle, to measure what the bounds clamps cost)
#
# Issue 14's one-call measurement (about 8 minutes of GPU time; see docs/benchmarks.md):
#   STAGES='tests torch bench robustness' bash scripts/gpu-check/device.sh --suite matmul,attention,lora,train
set -u
C=device-carry/gpu
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
for f in $C/*.deb; do dpkg -x "$f" / 2>/dev/null; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
xz -dc $C/node.xz > /tmp/node && chmod +x /tmp/node
xz -dc $C/dawn.node.xz > $C/node_modules/webgpu/dist/linux-x64/dawn.node
ln -sfn $C/node_modules node_modules
export GENALIGN_KERNELS_DIR=$PWD/kernels GENALIGN_UNSAFE_APIS=1 GENALIGN_CACHE_DIR=/tmp/gcache
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
/tmp/node scripts/probe-adapter.mjs | tee $OUT/adapter.json | head -12
STAGES=${STAGES:-tests parity bench}
if [[ " $STAGES " == *" tests "* ]]; then
echo "=== tests on the GPU"
timeout 120 /tmp/node test/gpu-bundle/tests.mjs > $OUT/tests.log 2>&1; echo "tests exit $?"
grep -E "Total|Passed|Skipped|FAIL" $OUT/tests.log | head -20
fi
if [[ " $STAGES " == *" parity "* ]]; then
echo "=== HF transformers + PEFT parity (ViT-B/32, random weights)"
timeout 100 python3 scripts/gpu-check/hf_reference.py /tmp/ref 2>&1 | grep -v Warning | tail -3
timeout 100 /tmp/node $C/parity.mjs /tmp/ref 32 2>&1 | tee $OUT/parity.log
echo "=== PEFT loads the adapters genalign wrote"
timeout 60 python3 scripts/gpu-check/hf_reference.py --check-ours /tmp/ref 2>&1 | grep -v Warning | tail -4 | tee -a $OUT/parity.log
fi
if [[ " $STAGES " == *" autotune "* ]]; then
echo "=== autotune: every matmul candidate on one ViT-B/32 training step's shapes (batch 32)"
timeout 200 /tmp/node $C/autotune.mjs --model vit-b-32 --batch 32 --reps 5 > $OUT/autotune.log 2>&1; echo "autotune exit $?"
grep -v Warning $OUT/autotune.log | tail -30
fi
if [[ " $STAGES " == *" torch "* ]]; then
echo "=== PyTorch + PEFT GMAIL step (fp32 without TF32, bf16 autocast; micro-batch 64 and 128)"
timeout 130 python3 bench/peer-torch/gmail_step.py --configs vit-b-32,vit-b-16 --batches 64,128 \
  --precisions fp32,bf16 --steps 20 --warmup 3 --out $OUT/torch-peer.json 2>&1 | grep -v Warning | tail -12
fi
if [[ " $STAGES " == *" bench "* ]]; then
echo "=== bench"
TORCH_ROWS=()
[ -s $OUT/torch-peer.json ] && TORCH_ROWS=(--torch-rows $OUT/torch-peer.json)
timeout 240 /tmp/node $C/bench.mjs --out $OUT "${TORCH_ROWS[@]}" "$@" > $OUT/bench.log 2>&1; echo "bench exit $?"
tail -80 $OUT/bench.log
fi
if [[ " $STAGES " == *" robustness "* ]]; then
echo "=== square matmuls with Dawn's disable_robustness toggle (no bounds clamps)"
mkdir -p $OUT/robustness
GENALIGN_DAWN_ENABLE=disable_robustness timeout 40 /tmp/node $C/bench.mjs --suite matmul --filter square --no-peer \
  --out $OUT/robustness > $OUT/robustness.log 2>&1; echo "robustness exit $?"
grep -i "square" $OUT/robustness.log | tail -40
fi
