"""speechllm/recipes/default.yaml's path through training, on tiny stand-ins of its Whisper parts: cross-attention
coupling, LoRA on the decoder, a frozen encoder read through the feature cache, attribute heads fitted after the
last stage, and the adapters scaled by `adapter_scale`, in one short run."""

import json
from pathlib import Path

import pytest
import soundfile as sf
from safetensors.torch import load_file

import speechllm
from speechllm.testing import TINY_ENCODERS, tiny_tokenizer
from speechllm.training.config import load_train_config
from speechllm.training.trainer import Trainer
from tests.test_heads import RATE, voice

DEFAULT_RECIPE = Path(__file__).resolve().parents[1] / "speechllm" / "recipes" / "default.yaml"
MALE, FEMALE = [100, 110, 120, 130, 140, 150], [200, 215, 230, 245, 260, 275]


def labelled_voices(folder: Path) -> Path:
    """Twelve vowels, low ones labelled Male and high ones Female, with a transcript and an accent each."""
    rows = []
    for i, f0 in enumerate(MALE + FEMALE):
        sf.write(folder / f"{i}.wav", voice(f0, seed=i), RATE)
        rows.append({"audio": f"{i}.wav", "transcript": "hello there", "gender": "male" if f0 < 200 else "female",
                     "accent": ["america", "europe"][i % 2]})
    manifest = folder / "voices.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


@pytest.mark.slow
def test_the_default_recipe_trains_scales_fits_heads_and_saves_a_model_that_answers(tmp_path):
    manifest = labelled_voices(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path / "tokenizer")
    config = load_train_config(DEFAULT_RECIPE, [
        f"output_dir={tmp_path / 'run'}", f"tokenizer={tmp_path / 'tokenizer'}",
        f"data.sources.0.manifest={manifest}", f"data.sources.1.manifest={manifest}",
        f"eval_data.sources.0.manifest={manifest}",
        "stages.0.steps=2", "stages.0.batch_size=4", "stages.0.warmup_steps=1", "eval_batches=1", "eval_samples=1",
        "precision=fp32", "report_to=[]",
        "heads={Gender: [pitch], Accent: [encoder_layers]}",  # the recipe's vad and voice need downloaded weights
    ])
    assert config.model.llm.coupling == "cross_attention" and config.model.llm.train == "lora"
    assert config.adapter_scale == 0.7
    # Tiny random Whisper parts in place of the packaged tiny.en weights; everything else is the recipe's.
    whisper = {**TINY_ENCODERS["whisper"], "decoder_start_token_id": 0, "pad_token_id": 2, "eos_token_id": 1,
               "bos_token_id": 0, "init_std": 0.3}
    config.model.encoder.name_or_path, config.model.encoder.hf_config = None, TINY_ENCODERS["whisper"]
    config.model.llm.name_or_path, config.model.llm.hf_config = None, whisper

    trainer = Trainer(config)
    final = trainer.train()

    history = trainer.history
    cache = next(h for h in history if "feature_cache_misses" in h)
    assert cache["feature_cache_misses"] > 0 and cache["feature_cache_hits"] > 0  # written in training, read again
    assert any("eval_loss" in h for h in history)
    adapters = [name for name in load_file(final / "model.safetensors") if ".lora_B." in name]
    assert adapters
    assert {"adapter_scale": 0.7, "adapters_scaled": len(adapters)} in history
    assert json.loads((final / "history.json").read_text()) == history

    model = speechllm.load(final, device="cpu")
    assert sorted(model.attribute_heads.fields) == ["Accent", "Gender"]
    answers = model.generate_meta([(voice(112.0, seed=40), RATE), (voice(238.0, seed=41), RATE)],
                                  fields=["Gender", "Transcript"])
    assert [a.values["Gender"] for a in answers] == ["Male", "Female"]
    assert all(a.valid for a in answers)
