#!/usr/bin/env bash
# Install everything speechllm needs on a fresh Debian machine with Python 3.11: system packages,
# a virtual environment in .venv, PyTorch 2.13 (it prints which build), and the package with every extra and
# its test tools. Stops at the first failing step. Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v espeak-ng >/dev/null 2>&1 || need_apt+=(espeak-ng)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)   # the web page test drives it headless
ldconfig -p 2>/dev/null | grep -q libsndfile || need_apt+=(libsndfile1)
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    echo "[setup] apt-get install ${need_apt[*]}"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv with $PYTHON"
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.speechllm-installed
# pip's output without one harmless warning; a failing pip stops this script (pipefail keeps pip's status).
pip_install() {
    .venv/bin/pip install -q "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }
}
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "[setup] installing Python packages (first run takes a few minutes)"
    pip_install --upgrade pip
    # PyTorch 2.13 first, so that no dependency chooses another build. Which build pip takes depends on where it
    # looks: a CPU wheel on pip's find-links (this project's machines), else PyPI's default (on Linux a CUDA build,
    # several GB). TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu asks for the CPU build explicitly.
    pip_install torch==2.13.0 ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
    .venv/bin/python -c "import torch; print(f'[setup] torch {torch.__version__}:', \
        f'CUDA {torch.version.cuda} build' if torch.version.cuda else 'CPU-only build')"
    # Every extra (serve, eval, synth) and the test tools: the README's commands and the test suite use them all.
    pip_install -e ".[all,dev]"
    .venv/bin/python -c "import speechllm, torch, transformers" && touch "$stamp"
fi
