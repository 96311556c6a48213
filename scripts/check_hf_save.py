"""Second half of scripts/check-hf-save.ts: loads MODEL_DIR with transformers and compares with
the embeddings genalign wrote to REF.safetensors. Usage: python check_hf_save.py MODEL_DIR REF."""
import json
import sys

import torch
from safetensors import safe_open
from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

TOL = 1e-5


def main(model_dir, ref_path):
    with safe_open(ref_path, "pt") as f:
        ref = {k: f.get_tensor(k) for k in f.keys()}
        captions = json.loads(f.metadata()["captions"])
    model, info = CLIPModel.from_pretrained(model_dir, attn_implementation="eager", output_loading_info=True)
    model.eval()
    tok = CLIPTokenizer.from_pretrained(model_dir)
    proc = CLIPImageProcessor.from_pretrained(model_dir)
    ids = tok(captions, padding="max_length", max_length=ref["ids"].shape[1], return_tensors="pt").input_ids
    with torch.no_grad():
        img = model.visual_projection(model.vision_model(pixel_values=ref["pixels"]).pooler_output)
        txt = model.text_projection(model.text_model(input_ids=ids).pooler_output)
    checks = {
        "token ids (HF CLIPTokenizer vs genalign)": float((ids.float() - ref["ids"]).abs().max()),
        "image_embeds max |diff|": float((img - ref["image_embeds"]).abs().max()),
        "text_embeds max |diff|": float((txt - ref["text_embeds"]).abs().max()),
        "logit_scale |diff|": abs(float(model.logit_scale.detach()) - float(ref["logit_scale"])),
        "tensors missing, unexpected or mismatched": float(sum(len(v) for v in info.values() if isinstance(v, (list, set, dict)))),
    }
    size = model.config.vision_config.image_size
    crop = proc.crop_size
    checks["preprocessor crop != image_size"] = float(crop["height"] != size or crop["width"] != size)
    bad = False
    for k, v in checks.items():
        ok = v <= TOL
        bad |= not ok
        print(f"{'ok  ' if ok else 'FAIL'} {k}: {v:.3g}")
    print(f"{model_dir}: CLIPModel.from_pretrained {'FAILED the check' if bad else 'gives genalign embeddings within 1e-5'}"
          f" (image {tuple(img.shape)}, text {tuple(txt.shape)})")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main(*sys.argv[1:3])
