"""The PyTorch peer of genalign's `train` bench suite: one GMAIL training step, timed on a GPU.

The same step as bench/suites/train.ts ("teacher cache" rows): the student is
CLIPVisionModelWithProjection (transformers, random weights) with PEFT LoRA r=4 (alpha 4, no
dropout) on q/k/v/out; the teacher embeddings are given (random stand-ins for cached rows); the
loss is GMAIL's gen->real InfoNCE at tau = 0.07 (cross-entropy of the cosine logits / tau with
row i's positive in column i); backward reaches only the LoRA factors; then
clip_grad_norm_(1.0) and AdamW (lr 1e-4, weight decay 0.01).

Precisions: fp32 (TF32 matmuls off: torch.backends.cuda.matmul.allow_tf32 = False and cuDNN's
too) and bf16 autocast (the forward under torch.autocast(dtype=bfloat16); the loss in f32).
Reported per (config, micro-batch, precision): the median step time over --steps timed steps
after --warmup (CUDA events around each step), images/s, and torch.cuda.max_memory_allocated
over the timed steps.

Output: a JSON list of rows keyed like genalign's bench rows, so they can be set beside them:
  {"kernel": "train-step", "variant": "teacher cache",
   "shape": "vit-b-32 B=64 [64,3,224,224] P=512", "dtype": "f32" | "f16",
   "peer": "torch-<version> fp32" | "torch-<version> bf16-autocast",
   "peer_ms": median ms, "extra": {"peer_images_per_s", "peer_peak_bytes", "peer_steps"}}
genalign's f16 rows (--precision f16) are compared with torch's bf16 autocast, its f32 rows
with torch's fp32, as issue 14 asks.

Needs torch, transformers and peft (the lent H200 machine has them; CI machines do not, and CI
never runs this). `--self-test` checks the loss, the step and the JSON rows on the CPU with a
small pure-torch stand-in for the model, with torch alone.

  python3 bench/peer-torch/gmail_step.py --configs vit-b-32,vit-b-16 --batches 64,128 \\
      --precisions fp32,bf16 --steps 20 --warmup 5 --out /tmp/out/torch-peer.json
"""
import argparse
import json
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F

TAU = 0.07
LR = 1e-4
WEIGHT_DECAY = 0.01
CLIP = 1.0
TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]

# genalign's presets (src/nn/config.ts NAMED_CONFIGS), as CLIPVisionConfig fields.
CONFIGS = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 image_size=32, patch_size=8, projection_dim=32),
    "vit-b-32": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                     image_size=224, patch_size=32, projection_dim=512),
    "vit-b-16": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                     image_size=224, patch_size=16, projection_dim=512),
}


def gmail_loss(g, r):
    """GMAIL Eq. 1: mean_i -log softmax_j(cos(g_i, r_j) / tau)[i], in f32."""
    logits = F.normalize(g.float(), dim=-1) @ F.normalize(r.float(), dim=-1).T / TAU
    return F.cross_entropy(logits, torch.arange(g.shape[0], device=g.device))


def clip_student(name, device):
    """CLIPVisionModelWithProjection with random weights and PEFT LoRA on q/k/v/out."""
    from peft import LoraConfig, get_peft_model
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    cfg = CLIPVisionConfig(**CONFIGS[name], hidden_act="quick_gelu", layer_norm_eps=1e-5)
    torch.manual_seed(0)
    model = CLIPVisionModelWithProjection(cfg).to(device)
    model.requires_grad_(False)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=4, lora_dropout=0.0, target_modules=TARGETS))

    def forward(pixels):
        return model(pixel_values=pixels).image_embeds

    return forward, [p for p in model.parameters() if p.requires_grad], cfg.projection_dim, cfg.image_size


class StandIn(torch.nn.Module):
    """For --self-test: frozen patch projection + a LoRA pair, the shape of the real student."""

    def __init__(self, size, proj):
        super().__init__()
        torch.manual_seed(0)
        self.w = torch.nn.Parameter(torch.randn(proj, 3 * size * size) * 0.02, requires_grad=False)
        self.a = torch.nn.Parameter(torch.randn(4, 3 * size * size) * 0.01)
        self.b = torch.nn.Parameter(torch.zeros(proj, 4))

    def forward(self, pixels):
        x = pixels.flatten(1)
        return x @ self.w.T + (x @ self.a.T) @ self.b.T


def make_step(forward, params, teacher, bf16):
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=WEIGHT_DECAY)

    def step(pixels):
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=pixels.device.type, dtype=torch.bfloat16, enabled=bf16):
            g = forward(pixels)
        loss = gmail_loss(g, teacher)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        opt.step()
        return loss

    return step


def time_steps(step, pixels, steps, warmup, device):
    """Median ms of `steps` timed steps after `warmup`; peak bytes allocated while timing."""
    for _ in range(warmup):
        step(pixels)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    loss = None
    for _ in range(steps):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            loss = step(pixels)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            loss = step(pixels)
            times.append((time.perf_counter() - t0) * 1000)
    peak = torch.cuda.max_memory_allocated() if cuda else 0
    return statistics.median(times), peak, float(loss)


def row(name, batch, size, proj, precision, ms, peak, steps):
    return {
        "kernel": "train-step",
        "variant": "teacher cache",
        "shape": f"{name} B={batch} [{batch},3,{size},{size}] P={proj}",
        "dtype": "f16" if precision == "bf16" else "f32",
        "peer": f"torch-{torch.__version__} {'bf16-autocast' if precision == 'bf16' else 'fp32'}",
        "peer_ms": ms,
        "extra": {"peer_images_per_s": batch / (ms / 1000), "peer_peak_bytes": peak, "peer_steps": steps},
    }


def self_test():
    """The loss against its definition, a step that lowers it, and well-formed rows (CPU)."""
    g, r = torch.randn(5, 8, dtype=torch.float64), torch.randn(5, 8, dtype=torch.float64)
    cos = torch.stack([torch.stack([torch.dot(a, b) / (a.norm() * b.norm()) for b in r]) for a in g])
    want = -sum(cos[i, i] / TAU - torch.logsumexp(cos[i] / TAU, 0) for i in range(5)) / 5
    assert abs(gmail_loss(g, r).item() - want.item()) < 1e-5, (gmail_loss(g, r).item(), want.item())
    model = StandIn(8, 16)
    teacher = torch.randn(6, 16)
    pixels = torch.randn(6, 3, 8, 8)
    params = [p for p in model.parameters() if p.requires_grad]
    step = make_step(model, params, teacher, bf16=False)
    first = float(step(pixels))
    for _ in range(30):
        last = float(step(pixels))
    assert last < first, (first, last)
    assert model.w.grad is None, "the frozen weight got a gradient"
    ms, peak, loss = time_steps(step, pixels, 3, 1, torch.device("cpu"))
    out = row("tiny", 6, 8, 16, "bf16", ms, peak, 3)
    assert out["dtype"] == "f16" and out["peer"].endswith("bf16-autocast") and out["peer_ms"] > 0 and math.isfinite(loss)
    json.dumps(out)
    print(f"self-test passed: loss {first:.4f} -> {last:.4f}, row {json.dumps(out)}")


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", default="vit-b-32,vit-b-16")
    ap.add_argument("--batches", default="64,128")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default=None, help="JSON file for the rows (default: stdout)")
    ap.add_argument("--self-test", action="store_true")
    a = ap.parse_args(argv)
    if a.self_test:
        self_test()
        return 0
    device = torch.device(a.device)
    # fp32 means fp32: no TF32 tensor-core matmuls or convolutions.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    rows, failures = [], []
    for name in a.configs.split(","):
        for batch in (int(b) for b in a.batches.split(",")):
            for precision in a.precisions.split(","):
                try:
                    forward, params, proj, size = clip_student(name, device)
                    teacher = torch.randn(batch, proj, device=device)
                    pixels = torch.randn(batch, 3, size, size, device=device)
                    step = make_step(forward, params, teacher, precision == "bf16")
                    ms, peak, loss = time_steps(step, pixels, a.steps, a.warmup, device)
                    rows.append(row(name, batch, size, proj, precision, ms, peak, a.steps))
                    print(f"torch {name} B={batch} {precision}: {ms:.2f} ms, {batch / (ms / 1000):.1f} images/s, "
                          f"peak {peak / 2**20:.0f} MiB, loss {loss:.4f}", file=sys.stderr)
                except Exception as e:  # one failed configuration (out of memory, say) does not lose the others
                    failures.append({"shape": f"{name} B={batch}", "precision": precision, "error": repr(e)})
                    print(f"torch {name} B={batch} {precision}: failed: {e!r}", file=sys.stderr)
                finally:
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
    text = json.dumps({"torch": torch.__version__, "results": rows, "failures": failures}, indent=2)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    else:
        print(text)
    return 1 if failures and not rows else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
