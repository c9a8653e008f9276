"""Run by tests/test_training.py under `accelerate launch`: trains a recipe and saves each rank's weights."""

import sys

from safetensors.torch import save_file

from speechllm.training.config import load_train_config
from speechllm.training.trainer import Trainer

recipe, out_dir, *overrides = sys.argv[1:]
trainer = Trainer(load_train_config(recipe, overrides))
trainer.train()
rank = trainer.accelerator.process_index
state = {k: v.detach().contiguous() for k, v in trainer.model.state_dict().items()}
save_file(state, f"{out_dir}/rank{rank}.safetensors")
