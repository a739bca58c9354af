"""Run by ComfyUI's interpreter in its checkout: encode prompts with ComfyUI's own CLIPLoader and CLIPTextEncode
nodes and save what CLIPTextEncode returns, for the conditioning parity test.

usage: python comfy_clip_encode.py TEXT_ENCODER_DIR CLIP_NAME OUT.safetensors PROMPT...
writes cond_<i> [1, 77, 4096] and pooled_<i> [1, 2048] for each prompt i.
"""
import sys

from comfy.cli_args import args

args.cpu = True  # as the host is started (--cpu); read when comfy.model_management is first imported
import folder_paths  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import nodes  # noqa: E402

folder, clip_name, out, prompts = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
folder_paths.add_model_folder_path("text_encoders", folder)
(clip,) = nodes.CLIPLoader().load_clip(clip_name, type="sd3")
tensors = {}
for i, prompt in enumerate(prompts):
    ((cond, extra),) = nodes.CLIPTextEncode().encode(clip, prompt)[0]
    tensors[f"cond_{i}"] = cond.contiguous()
    tensors[f"pooled_{i}"] = extra["pooled_output"].contiguous()
save_file(tensors, out)
