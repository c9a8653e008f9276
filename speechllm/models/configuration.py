"""`SpeechLLMConfig`: the transformers config of a speech LLM, holding its `ModelSpec` (see speechllm/config.py)."""

from __future__ import annotations

from transformers import AutoConfig, PreTrainedConfig

from ..config import ModelSpec, from_dict, to_dict


class SpeechLLMConfig(PreTrainedConfig):
    """A `ModelSpec` plus how the checkpoint stores its weights.

    `model_spec` is the spec itself, not a copy: `config.model_spec.llm.train = "full"` changes what is saved.
    On disk (config.json) it is the plain dict under "spec".
    """

    model_type = "speechllm"

    def __init__(self, spec: ModelSpec | dict | None = None, weights: str = "full", **kwargs):
        # A copy of what is given: two configs never share one spec.
        self.model_spec = from_dict(ModelSpec, to_dict(spec) if isinstance(spec, ModelSpec) else spec or {}, "model")
        self.weights = weights  # "full": all weights here; "trainable": trained weights + base references
        super().__init__(**kwargs)

    def to_dict(self) -> dict:
        output = super().to_dict()
        output["spec"] = to_dict(output.pop("model_spec"))
        return output


AutoConfig.register("speechllm", SpeechLLMConfig)
