"""Export a speechllm model as two GGUF files that llama.cpp serves on a CPU (`llama-mtmd-cli`, `llama-server`):
the LLM (`model.gguf`) and the audio encoder with its projector (`mmproj.gguf`, projector type "ultravox").

The files are written by llama.cpp's own converter (`convert_hf_to_gguf.py` in a llama.cpp checkout), which knows
every LLM family's tensor layout and tokenizer; copying it here would drift from the engine it serves. speechllm
writes what that converter reads: an Ultravox folder for `--mmproj` and a plain Hugging Face folder of the LLM.

What llama.cpp runs (tools/mtmd: mtmd-audio.cpp `mtmd_audio_preprocessor_whisper`, clip.cpp, models/whisper-enc.cpp):
the clip's log-mel with 30 s of silence appended, cut into 3000-frame (30 s) chunks, each chunk through Whisper's
encoder whole (no attention mask), and all 1500 frames per chunk stacked and projected as Ultravox does. A speechllm
model matches that when its Whisper encoder reads padded 30 s windows (`pad_to_window: true`, the default) and keeps
every frame (`crop_to_length: false`): the opposite of what vLLM's Ultravox needs (export/ultravox.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ..errors import ConfigError
from .ultravox import VLLM_TEXT_MODELS, write_ultravox_folder

LLAMA_CPP_ENV = "LLAMA_CPP_DIR"
CONVERTER = "convert_hf_to_gguf.py"
MODEL_FILE, MMPROJ_FILE = "model.gguf", "mmproj.gguf"
# The LLM families whose Hugging Face classes llama.cpp's converter reads and llama.cpp runs as text models.
GGUF_TEXT_MODELS = VLLM_TEXT_MODELS
CHUNK_FRAMES = 1500  # Whisper frames per 30 s chunk; llama.cpp stacks each chunk's frames apart


def gguf_blockers(spec) -> list[str]:
    """Why a model with this `ModelSpec` would not run in llama.cpp as it runs in speechllm: one sentence per part."""
    reasons = []
    encoder, connector = spec.encoder, spec.connector
    if encoder.family != "whisper":
        reasons.append(f"encoder: family {encoder.family!r} cannot be exported: llama.cpp's Ultravox projector "
                       "runs a Whisper encoder only")
    else:
        if not encoder.options.get("pad_to_window", True) or encoder.crop_to_length:
            reasons.append("encoder: llama.cpp runs Whisper on whole 30 s windows (the clip padded with silence) "
                           "and keeps all 1500 frames; train with encoder {crop_to_length: false} and "
                           "options {pad_to_window: true}")
        if (encoder.window_seconds or 30.0) != 30.0:
            reasons.append(f"encoder: window_seconds {encoder.window_seconds} differs from llama.cpp's 30 s chunks")
    if spec.fusion_encoder is not None:
        reasons.append("fusion_encoder: llama.cpp's projector reads one audio encoder")
    if connector.type != "ultravox":
        reasons.append(f"connector: type {connector.type!r} cannot be exported; llama.cpp's audio projectors hold "
                       "only the 'ultravox' connector of speechllm's")
    elif CHUNK_FRAMES % connector.options.get("stack", 8):
        reasons.append(f"connector: stack {connector.options.get('stack', 8)} does not divide {CHUNK_FRAMES}: "
                       "llama.cpp counts one audio token fewer per chunk than its projector makes")
    if spec.llm.coupling != "prefix":
        reasons.append(f"llm: coupling {spec.llm.coupling!r} cannot be exported: llama.cpp writes audio into "
                       "prompt positions")
    model_type = (spec.llm.hf_config or {}).get("model_type")
    if spec.llm.coupling == "prefix" and model_type not in GGUF_TEXT_MODELS:
        reasons.append(f"llm: model_type {model_type!r} is not one this exporter has checked in llama.cpp "
                       f"({', '.join(GGUF_TEXT_MODELS)})")
    return reasons


def check_gguf_exportable(spec) -> None:
    """ConfigError naming every part of the model that llama.cpp would run differently."""
    reasons = gguf_blockers(spec)
    if reasons:
        raise ConfigError("this model cannot be exported to GGUF (llama.cpp):\n  - " + "\n  - ".join(reasons))


def find_converter(llama_cpp=None) -> Path:
    """llama.cpp's convert_hf_to_gguf.py in `llama_cpp` (or $LLAMA_CPP_DIR); ConfigError saying how to get it."""
    folder = llama_cpp or os.environ.get(LLAMA_CPP_ENV)
    if not folder:
        raise ConfigError(f"GGUF export runs llama.cpp's converter: pass --llama-cpp DIR (or set {LLAMA_CPP_ENV}) "
                          "to a llama.cpp checkout, e.g. git clone https://github.com/ggml-org/llama.cpp")
    script = Path(folder) / CONVERTER
    if not script.is_file():
        raise ConfigError(f"{script} does not exist: {folder} is not a llama.cpp checkout")
    return script


def convert(script: Path, folder: Path, outfile: Path, *args: str) -> None:
    """Run llama.cpp's converter on one folder (f32: the exported model answers as the trained one; quantise after
    with llama-quantize); ConfigError with the end of its output if it fails."""
    command = [sys.executable, str(script), str(folder), "--outfile", str(outfile), "--outtype", "f32", *args]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise ConfigError(f"llama.cpp's converter failed on {folder.name}:\n{tail}")


def write_llm_folder(model, out: Path) -> Path:
    """The LLM alone as a Hugging Face folder (weights, config, tokenizer with the chat template)."""
    model.language_model.save_pretrained(out, safe_serialization=True)
    model.processor.tokenizer.save_pretrained(out)
    return out


def export_gguf(model, out, llama_cpp=None) -> Path:
    """Write `model` (adapters merged) to folder `out` as `model.gguf` (the LLM) and `mmproj.gguf` (Whisper encoder
    and Ultravox projector), both f32, by llama.cpp's converter found in `llama_cpp` or $LLAMA_CPP_DIR. Serve with
    `llama-mtmd-cli -m out/model.gguf --mmproj out/mmproj.gguf --jinja` (or llama-server). Returns `out`."""
    check_gguf_exportable(model.config.model_spec)
    script = find_converter(llama_cpp)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="speechllm-gguf-") as work:
        work = Path(work)
        convert(script, write_ultravox_folder(model, work / "ultravox"), out / MMPROJ_FILE, "--mmproj")
        convert(script, write_llm_folder(model, work / "llm"), out / MODEL_FILE)
        for notice in (work / "ultravox").glob("*NOTICE*"):  # the LLM's terms travel with its weights (Gemma)
            shutil.copyfile(notice, out / notice.name)
    return out
