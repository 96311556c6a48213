#!/usr/bin/env python3
"""Independent reference for genalign on a machine with transformers + peft (the GPU box).

Builds a random-weight CLIP ViT-B/32 vision tower with Hugging Face transformers
(CLIPVisionModelWithProjection, default config = ViT-B/32), saves it exactly as HF does
(save_pretrained, safetensors), wraps it with PEFT LoRA (r=4, alpha=8, q/k/v/out_proj,
init_lora_weights=False so B is non-zero) and saves the adapter. Writes reference embeddings
for random pixels (teacher = base model, student = PEFT model) and the adapter's key list.

usage: python3 hf_reference.py OUT_DIR
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file, load_file
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

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

save_file({"pixels": pixels.contiguous(), "teacher": teacher.contiguous(), "student": student.contiguous()},
          os.path.join(out, "ref.safetensors"))
keys = load_file(os.path.join(out, "adapter", "adapter_model.safetensors"))
json.dump({k: list(v.shape) for k, v in sorted(keys.items())}, open(os.path.join(out, "peft_keys.json"), "w"), indent=1)
print("reference written:", out, "teacher", tuple(teacher.shape), "student-teacher max diff",
      float((student - teacher).abs().max()))
