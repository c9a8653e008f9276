"""Sharded training (FSDP2) for the trainer: a recipe's `distributed: fsdp`.

Every process holds 1/N of the LLM's weights, gradients and optimiser states; each decoder layer is one shard
group, gathered just before its forward and backward and freed after. The encoder is sharded with the rest when a
stage trains it, and otherwise left whole on every process, so the frozen-encoder feature cache keeps working.

On GPUs accelerate does the sharding (`fsdp_plugin`, its FullyShardedDataParallelPlugin with fsdp_version 2).
On CPUs accelerate 1.15 quietly ignores an FSDP plugin and runs DDP over gloo, so the trainer calls torch's
`fully_shard` itself with the same layout (`shard_model`), and saves model and optimiser with
torch.distributed.checkpoint (`save_sharded_state`). Weights leave the shards only through `full_state_dict`,
a collective call that every process must make.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

SHARDED_STATE = "sharded"  # folder of a checkpoint holding the sharded model and optimiser (CPU path)


def decoder_layer_names(model: nn.Module) -> list[str]:
    """Class names of the LLM's decoder layers, the units that are gathered one at a time (transformers lists them
    in `_no_split_modules`); the encoder's layers join when the encoder trains."""
    language_model = model.language_model
    base = language_model.get_base_model() if hasattr(language_model, "get_base_model") else language_model
    return list(getattr(base, "_no_split_modules", None) or [])


def _shard_units(model: nn.Module, encoder_trains: bool) -> list[nn.Module]:
    names = set(decoder_layer_names(model))
    units = [m for m in model.language_model.modules() if type(m).__name__ in names]
    if encoder_trains:
        units += [m for m in model.encoder.modules() if type(m).__name__ in set(
            getattr(model.encoder, "_no_split_modules", None) or [])]
    return units


def fsdp_plugin(model: nn.Module, encoder_trains: bool):
    """accelerate's FSDP2 plugin with the layout `shard_model` applies on a CPU (for the GPU path)."""
    from accelerate import FullyShardedDataParallelPlugin

    layers = sorted({type(m).__name__ for m in _shard_units(model, encoder_trains)})
    return FullyShardedDataParallelPlugin(
        fsdp_version=2, reshard_after_forward=True, auto_wrap_policy="transformer_based_wrap",
        transformer_cls_names_to_wrap=layers, state_dict_type="SHARDED_STATE_DICT",
        ignored_modules=None if encoder_trains else [model.encoder],
    )


def shard_model(model: nn.Module, encoder_trains: bool) -> nn.Module:
    """Shard `model` in place over the default process group with torch's `fully_shard`: one group per decoder
    layer, the rest (embeddings, connector, output head) in the root group. A frozen encoder stays whole."""
    from torch.distributed.fsdp import fully_shard

    for unit in _shard_units(model, encoder_trains):
        fully_shard(unit)
    ignored = None if encoder_trains else set(model.encoder.parameters())
    fully_shard(model, ignored_params=ignored)
    return model


def is_sharded(model: nn.Module) -> bool:
    """Whether any weight of `model` is split across processes (a DTensor)."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def full_state_dict(model: nn.Module, trainable_only: bool = False) -> dict[str, torch.Tensor]:
    """The whole tensors of `model`'s weights on the CPU, under the names an unsharded model has (only those that
    train when `trainable_only`, as `save_pretrained(trainable_only=True)` writes them). On a sharded model this is
    a collective: every process must call it, and only the first one gets the tensors (the others get {})."""
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    if is_sharded(model):
        import torch.distributed as dist
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if dist.get_rank() != 0:
            return {}
    else:
        state = {n: t.detach().cpu() for n, t in model.state_dict().items()}
    return {n: t.contiguous() for n, t in state.items() if not trainable_only or n in names}


def save_sharded_state(model: nn.Module, optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """Write each process's shards of the model and optimiser into `folder` (torch.distributed.checkpoint);
    every process calls it."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=str(folder))


def load_sharded_state(model: nn.Module, optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """Read what `save_sharded_state` wrote back into the same sharded model and optimiser (every process)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state}
    dcp.load(state, checkpoint_id=str(folder))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
