"""Export to llama.cpp (GGUF): what can be exported, and, where llama.cpp is at hand, its answer on a clip.

llama.cpp is not a Python package: CI has no build of it. The tests that need it skip, saying so, unless
LLAMA_CPP_DIR names a llama.cpp checkout (its convert_hf_to_gguf.py and the converter's Python requirements) and,
for the answer, LLAMA_MTMD_CLI (or PATH) gives its `llama-mtmd-cli`. scripts/llamacpp_check.sh builds both from the
llama.cpp sources vendored in llama-cpp-python's sdist and runs this file.
"""

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speechllm.cli import main
from speechllm.config import ModelSpec, from_dict
from speechllm.errors import ConfigError
from speechllm.export import export_model, gguf_blockers
from speechllm.testing import TINY_ENCODERS, tiny_llm_config, tiny_model

LLAMA_CPP = os.environ.get("LLAMA_CPP_DIR")
MTMD_CLI = os.environ.get("LLAMA_MTMD_CLI") or shutil.which("llama-mtmd-cli")
# llama.cpp's converter with one change for the tiny tokenizer trained in tests (its docstring says which and why)
TINY_CONVERTER = Path(__file__).resolve().parents[1] / "scripts" / "llamacpp_tiny"
# What llama.cpp runs: Whisper on whole padded 30 s windows keeping all 1500 frames, Ultravox's projector with a stack
# dividing 1500. Three encoder layers: llama.cpp's converter maps conv1/conv2 through its per-layer name table.
WHISPER_3_LAYERS = {**TINY_ENCODERS["whisper"], "encoder_layers": 3}
LLAMACPP_MODEL = {"encoder": {"crop_to_length": False, "hf_config": WHISPER_3_LAYERS},
                  "connector": {"type": "ultravox", "options": {"stack": 4}}}
PROMPT = "transcribe the audio"

needs_converter = pytest.mark.skipif(
    not (LLAMA_CPP and (Path(LLAMA_CPP) / "convert_hf_to_gguf.py").is_file()),
    reason="set LLAMA_CPP_DIR to a llama.cpp checkout (scripts/llamacpp_check.sh builds one) to run its converter")
needs_mtmd_cli = pytest.mark.skipif(
    not MTMD_CLI, reason="llama-mtmd-cli is not built here: set LLAMA_MTMD_CLI or run scripts/llamacpp_check.sh")


def spec_of(encoder=None, connector=None, llm=None) -> ModelSpec:
    return from_dict(ModelSpec, {
        "encoder": {"family": "whisper", "hf_config": WHISPER_3_LAYERS, "crop_to_length": False, **(encoder or {})},
        "connector": connector or {"type": "ultravox", "options": {"stack": 4}},
        "llm": llm or {"hf_config": tiny_llm_config(400)}})


@pytest.mark.parametrize("sections, part, reason", [
    ({"encoder": {"crop_to_length": True}}, "encoder:", "keeps all 1500 frames"),
    ({"encoder": {"crop_to_length": True, "options": {"pad_to_window": False}}}, "encoder:", "whole 30 s windows"),
    ({"connector": {"type": "ultravox", "options": {"stack": 8}}}, "connector: stack 8", "one audio token fewer"),
    ({"connector": {"type": "stack_mlp", "options": {"stack": 4}}}, "connector: type 'stack_mlp'", "ultravox"),
    ({"llm": {"hf_config": {**tiny_llm_config(400), "model_type": "gpt2"}}}, "llm: model_type 'gpt2'", "llama"),
])
def test_what_llama_cpp_would_run_differently_is_named(sections, part, reason):
    reasons = gguf_blockers(spec_of(**sections))
    assert len(reasons) == 1 and reasons[0].startswith(part) and reason in reasons[0], reasons
    assert gguf_blockers(spec_of()) == []


def test_without_llama_cpp_the_export_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("LLAMA_CPP_DIR", raising=False)
    model = tiny_model("whisper", "ultravox", **LLAMACPP_MODEL)
    with pytest.raises(ConfigError, match="--llama-cpp DIR"):
        export_model(model, tmp_path / "out", format="gguf")
    with pytest.raises(ConfigError, match="not a llama.cpp checkout"):
        export_model(model, tmp_path / "out", format="gguf", llama_cpp=tmp_path)
    assert not (tmp_path / "out").exists()
    vllm_style = tiny_model("whisper", "ultravox", encoder={"options": {"pad_to_window": False}})
    vllm_style.save_pretrained(tmp_path / "saved")  # the vLLM export's model: refused from its config, before a load
    assert main(["export", str(tmp_path / "saved"), str(tmp_path / "x"), "--format", "gguf"]) == 1
    assert "whole 30 s windows" in capsys.readouterr().err


@pytest.fixture(scope="module")
def model():
    return tiny_model("whisper", "ultravox", **LLAMACPP_MODEL)


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    return export_model(model, tmp_path_factory.mktemp("gguf"), format="gguf", llama_cpp=TINY_CONVERTER)


@pytest.mark.slow  # two runs of llama.cpp's converter: 40 s on two busy cores
@needs_converter
def test_gguf_files_hold_what_llama_cpp_reads(model, exported):
    from gguf import GGUFReader

    mmproj, llm = GGUFReader(exported / "mmproj.gguf"), GGUFReader(exported / "model.gguf")
    read = {**{k: f.contents() for k, f in mmproj.fields.items() if k.startswith("clip.")},
            **{k: f.contents() for k, f in llm.fields.items() if not k.startswith("tokenizer.ggml.")}}
    assert read["clip.projector_type"] == "ultravox" and read["clip.audio.projector.stack_factor"] == 4
    assert read["clip.audio.num_mel_bins"] == 80 and read["clip.audio.projection_dim"] == 64
    assert read["general.architecture"] == "llama" and read["tokenizer.chat_template"] == (
        model.processor.tokenizer.chat_template)
    assert llm.fields["tokenizer.ggml.eos_token_id"].contents() == model.processor.end_of_turn_ids[0]
    names = {t.name for t in mmproj.tensors}  # clip.cpp's names for Ultravox's projector (clip-impl.h)
    assert {"mm.a.norm_pre.weight", "mm.a.mlp.1.weight", "mm.a.norm_mid.weight", "mm.a.mlp.2.weight"} <= names
    assert len([n for n in names if n.startswith("a.blk.")]) == 3 * 15  # Whisper layers, k_proj without bias


def write_clip(path: Path, seconds: float = 1.3) -> np.ndarray:
    """A 16 kHz 16-bit WAV of a chirp in noise; returns the samples as both engines read them back."""
    t = np.arange(int(seconds * 16000)) / 16000
    wave = 0.3 * np.sin(2 * np.pi * (200 + 400 * t) * t) + 0.05 * np.random.RandomState(0).randn(len(t))
    sf.write(path, wave.astype(np.float32), 16000, subtype="PCM_16")
    return sf.read(path, dtype="float32")[0]


def llama_cpp_answer(exported: Path, clip: Path, max_tokens: int) -> str:
    """llama-mtmd-cli's greedy answer (temperature 0) to our prompt on the clip: the text it prints."""
    command = [MTMD_CLI, "-m", str(exported / "model.gguf"), "--mmproj", str(exported / "mmproj.gguf"), "--jinja",
               "--audio", str(clip), "-p", PROMPT, "--temp", "0", "--top-k", "1", "-n", str(max_tokens),
               "-t", "2", "--seed", "0"]
    marker = "<<speechllm: answer follows>>"  # printed by llama-mtmd-cli just before the prompt is read
    done = subprocess.run(command, capture_output=True, timeout=300,
                          env={**os.environ, "MTMD_TEST_RESPONSE_MARKER": marker})
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    return done.stdout.decode("utf-8", errors="replace").split(marker + "\n", 1)[1].strip("\n")


@pytest.mark.slow
@needs_converter
@needs_mtmd_cli
def test_llama_cpp_gives_our_greedy_answer_on_a_clip(model, exported, tmp_path):
    wave = write_clip(tmp_path / "clip.wav")
    batch = model.processor([{"role": "user", "content": [{"type": "audio", "audio": wave},
                                                          {"type": "text", "text": PROMPT}]}])
    with torch.no_grad():
        ours = model.generate(**batch, max_new_tokens=16, do_sample=False)[0].tolist()
    ours_text = model.processor.tokenizer.decode([t for t in ours if t not in model.processor.end_of_turn_ids])
    theirs = llama_cpp_answer(exported, tmp_path / "clip.wav", max_tokens=16)
    print(f"\nspeechllm tokens: {ours}\nspeechllm text:   {ours_text!r}\nllama.cpp text:   {theirs!r}")
    assert theirs == ours_text.strip("\n")
