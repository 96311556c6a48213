#!/usr/bin/env python3
"""Independent reference for genalign on a machine with transformers + peft (the GPU box).

Builds a random-weight CLIP ViT-B/32 vision tower with Hugging Face transformers
(CLIPVisionModelWithProjection, default config = ViT-B/32), saves it exactly as HF does
(save_pretrained, safetensors), wraps it with PEFT LoRA (r=4, alpha=8, q/k/v/out_proj,
init_lora_weights=False so B is non-zero) and saves the adapter; then a second adapter that
also carries the student's own projection head (modules_to_save=["visual_projection"], the
copy perturbed so it differs from the base). Writes reference embeddings for random pixels
(teacher = base model, student / student_dual = the PEFT models) and each adapter's key list.

With --check-ours, the other direction: loads the adapters genalign wrote (parity.ts writes
OUT_DIR/ours-adapter and OUT_DIR/ours-adapter-dual, and its own embeddings of the same pixels in
OUT_DIR/ours.safetensors) with PeftModel.from_pretrained and prints the differences.

usage: python3 hf_reference.py OUT_DIR
       python3 hf_reference.py --check-ours OUT_DIR
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file, load_file
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection


def check_ours(out):
    """PEFT loads the adapters genalign wrote; its embeddings must match genalign's."""
    from peft import PeftModel

    ref = load_file(os.path.join(out, "ref.safetensors"))
    ours = load_file(os.path.join(out, "ours.safetensors"))
    for name, sub in [("ours_student", "ours-adapter"), ("ours_student_dual", "ours-adapter-dual")]:
        try:
            base = CLIPVisionModelWithProjection.from_pretrained(os.path.join(out, "model"))
            peft_model = PeftModel.from_pretrained(base, os.path.join(out, sub)).eval()
            with torch.no_grad():
                emb = peft_model(pixel_values=ref["pixels"]).image_embeds
            diff = float((emb - ours[name]).abs().max())
            scale = float(ours[name].abs().max())
            moved = float((emb - ref["teacher"]).abs().max())
            print(f"PEFT loads genalign's {sub}: max |PEFT - ours| = {diff:.3e} (max |ours| {scale:.3f}; "
                  f"max |PEFT - teacher| {moved:.3e}, non-zero when the adapter took effect)")
        except Exception as e:  # report and go on to the next adapter
            print(f"PEFT could not load genalign's {sub}: {type(e).__name__}: {e}")


if sys.argv[1] == "--check-ours":
    check_ours(sys.argv[2])
    sys.exit(0)

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
cfg = CLIPVisionConfig(projection_dim=512)  # HF defaults: hidden 768, 12 layers, patch 32, quick_gelu
model = CLIPVisionModelWithProjection(cfg).eval()
model.save_pretrained(os.path.join(out, "model"), safe_serialization=True)

pixels = torch.randn(4, 3, 224, 224)
with torch.no_grad():
    teacher = model(pixel_values=pixels).image_embeds

from peft import LoraConfig, get_peft_model  # noqa: E402

lcfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "out_proj"],
                  lora_dropout=0.0, bias="none", init_lora_weights=False)
peft_model = get_peft_model(CLIPVisionModelWithProjection.from_pretrained(os.path.join(out, "model")), lcfg).eval()
peft_model.save_pretrained(os.path.join(out, "adapter"), safe_serialization=True)
with torch.no_grad():
    student = peft_model(pixel_values=pixels).image_embeds


# Dual projection: the student's own visual_projection as a PEFT modules_to_save module.
student_dual = None
try:
    dcfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "out_proj"],
                      lora_dropout=0.0, bias="none", init_lora_weights=False, modules_to_save=["visual_projection"])
    dual_model = get_peft_model(CLIPVisionModelWithProjection.from_pretrained(os.path.join(out, "model")), dcfg).eval()
    with torch.no_grad():
        own = dual_model.base_model.model.visual_projection.modules_to_save["default"].weight
        own.add_(0.05 * torch.randn_like(own))
        student_dual = dual_model(pixel_values=pixels).image_embeds
    dual_model.save_pretrained(os.path.join(out, "adapter-dual"), safe_serialization=True)
except Exception as e:  # the plain parity still runs
    print(f"dual-projection reference failed: {type(e).__name__}: {e}")

tensors = {"pixels": pixels.contiguous(), "teacher": teacher.contiguous(), "student": student.contiguous()}
if student_dual is not None:
    tensors["student_dual"] = student_dual.contiguous()
save_file(tensors, os.path.join(out, "ref.safetensors"))
for sub, name in [("adapter", "peft_keys.json"), ("adapter-dual", "peft_keys_dual.json")]:
    path = os.path.join(out, sub, "adapter_model.safetensors")
    if os.path.exists(path):
        keys = load_file(path)
        json.dump({k: list(v.shape) for k, v in sorted(keys.items())}, open(os.path.join(out, name), "w"), indent=1)
print("reference written:", out, "teacher", tuple(teacher.shape), "student-teacher max diff",
      float((student - teacher).abs().max()),
      "" if student_dual is None else f"student_dual-student max diff {float((student_dual - student).abs().max()):.3e}")
