"""Run by tests/test_sharded_training.py with 2 processes: shards a tiny LoRA model and saves its trainable weights
gathered from the shards (`sharded/`) beside the save of an unsharded copy holding the same weights (`whole/`)."""

import copy
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import save_file

from speechllm.testing import tiny_model
from speechllm.training.sharding import full_state_dict, is_sharded, shard_model
from speechllm.training.trainer import set_trainable

out = Path(sys.argv[1])
accelerator = Accelerator(cpu=True)  # joins the 2 processes over gloo
model = tiny_model(llm={"train": "lora"})
torch.manual_seed(1)
with torch.no_grad():  # adapters that are not zero, so a mix-up of shards shows
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.normal_(0, 0.3)
spec = model.config.model_spec
spec.encoder.name_or_path, spec.llm.name_or_path = "base-encoder", "base-llm"  # references a trainable save needs
set_trainable(model, ["connector", "llm"])
whole = copy.deepcopy(model)
shard_model(model, encoder_trains=False)
assert is_sharded(model)
trainable = full_state_dict(model, trainable_only=True)  # every process takes part
everything = full_state_dict(model)
if accelerator.is_main_process:
    model.save_pretrained(out / "sharded", trainable_only=True, state_dict=trainable)
    whole.save_pretrained(out / "whole", trainable_only=True)
    save_file(everything, str(out / "sharded-full.safetensors"))
    save_file({n: t.contiguous() for n, t in whole.state_dict().items()}, str(out / "whole-full.safetensors"))
accelerator.wait_for_everyone()
