#!/usr/bin/env bash
# Does llama.cpp answer as speechllm does? Builds llama.cpp's `llama-mtmd-cli` from the llama.cpp sources vendored in
# llama-cpp-python's sdist (PyPI; both MIT), then runs tests/test_export_gguf.py against it: a tiny model exported with
# `export --format gguf` (llama.cpp's own convert_hf_to_gguf.py), and llama-mtmd-cli's greedy answer on a clip compared
# with speechllm's. The build is the long part: about 35 minutes on this project's busy 2-core machine.
#   scripts/llamacpp_check.sh [WORKDIR]     (default /tmp/speechllm-llamacpp; an existing build there is reused)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mkdir -p "${1:-/tmp/speechllm-llamacpp}" && cd "${1:-/tmp/speechllm-llamacpp}" && pwd)"
python="${PYTHON:-python3}"
llama="$work/llama.cpp"

if [ ! -f "$llama/convert_hf_to_gguf.py" ]; then
  "$python" -m pip download -q --no-binary :all: --no-deps "llama-cpp-python==${LLAMA_CPP_PYTHON:-0.3.36}" -d "$work"
  tar xzf "$work"/llama_cpp_python-*.tar.gz -C "$work"
  mv "$work"/llama_cpp_python-*/vendor/llama.cpp "$llama"
fi
if [ ! -x "$llama/build/bin/llama-mtmd-cli" ]; then
  cmake -S "$llama" -B "$llama/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
    -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF
  cmake --build "$llama/build" --target llama-mtmd-cli -j"${JOBS:-2}"
fi
# The converter's one requirement speechllm does not install (it imports it for every Llama-family tokenizer).
"$python" -c "import sentencepiece" 2>/dev/null || "$python" -m pip install -q --target "$work/pydeps" sentencepiece

export LLAMA_CPP_DIR="$llama" LLAMA_MTMD_CLI="$llama/build/bin/llama-mtmd-cli"
export PYTHONPATH="$repo:$work/pydeps${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
cd "$repo" && "$python" -m pytest -q -s -rs tests/test_export_gguf.py
