"""The end of a run, after its last stage: scale the LoRA adapters (`adapter_scale`), fit the attribute heads
(`heads`), and save the final model with the run's history."""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import ConfigError
from .checkpoints import save_final_model
from .config import TrainConfig

logger = logging.getLogger(__name__)


def finish_run(model, config: TrainConfig, history: list[dict]) -> Path:
    """Apply the recipe's end-of-run steps to the trained (unwrapped) `model` and write `output_dir/final`;
    returns that folder. `history` gains a record of the adapter scaling. Run it on the main process only."""
    if config.adapter_scale != 1:
        scaled = model.scale_adapters(config.adapter_scale)
        history.append({"adapter_scale": config.adapter_scale, "adapters_scaled": scaled})
        logger.info(f"scaled {scaled} LoRA adapters by {config.adapter_scale}")
    if config.heads:
        fit_recipe_heads(model, config)
    return save_final_model(model, Path(config.output_dir), history)


def fit_recipe_heads(model, config: TrainConfig) -> None:
    """Fit the recipe's attribute heads on the labelled manifests of its metadata sources."""
    from ..data.mixing import DataConfig
    from ..heads import fit_model_heads

    manifests = list(dict.fromkeys(
        source.manifest for source in DataConfig.from_dict(config.data).sources
        if source.manifest is not None and source.task == "metadata"))
    if not manifests:
        raise ConfigError("heads: the recipe's data needs a metadata source with a manifest to fit them on")
    logger.info(f"fitting attribute heads {sorted(config.heads)} on {', '.join(manifests)}")
    model.eval()
    fit_model_heads(model, manifests, config.heads)
