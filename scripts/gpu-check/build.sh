#!/usr/bin/env bash
# Bundles what the GPU box runs (it has no npm): tests, bench, HF parity, autotune. Output goes to
# device-carry/gpu/ (git-ignored) with node, dawn.node and the Vulkan loader packages.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
out=device-carry/gpu
mkdir -p "$out/node_modules/webgpu/dist/linux-x64"
common=(--bundle --platform=node --format=esm --target=node20 --external:webgpu --external:sharp
  "--banner:js=import { createRequire as __cr } from 'module'; const require = __cr(import.meta.url);")
# The test bundle lives in test/ so the helpers' ../fixtures resolves to test/fixtures.
npx esbuild scripts/gpu-check/run-tests.ts "${common[@]}" --outfile=test/gpu-bundle/tests.mjs --log-level=warning
npx esbuild bench/run.ts "${common[@]}" --outfile=$out/bench.mjs --log-level=warning
npx esbuild scripts/gpu-check/parity.ts "${common[@]}" --outfile=$out/parity.mjs --log-level=warning
npx esbuild src/cli/autotune.ts "${common[@]}" --outfile=$out/autotune.mjs --log-level=warning
# tfjs's gradient registrations for the bench's fwd+bwd tfjs peers (bench/peer-tfjs.ts loads it).
npx esbuild node_modules/@tensorflow/tfjs-core/dist/register_all_gradients.js --bundle --platform=node --format=esm --outfile=$out/tfjs-gradients.mjs --log-level=warning
cp node_modules/webgpu/index.js node_modules/webgpu/package.json "$out/node_modules/webgpu/"
[ -f "$out/dawn.node.xz" ] || xz -T2 -6 -c node_modules/webgpu/dist/linux-x64/dawn.node > "$out/dawn.node.xz"
[ -f "$out/node.xz" ] || xz -T2 -6 -c "$(command -v node)" > "$out/node.xz"
du -sh "$out" test/gpu-bundle
