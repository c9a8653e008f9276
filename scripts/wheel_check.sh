#!/usr/bin/env bash
# Does the package work installed from a wheel, away from this checkout? Builds the wheel, installs it with its core
# dependencies only (no extras) into a fresh venv, and from another folder runs: quickstart --help, infer with the
# default model on a real clip, and a short training run of a packaged recipe by name. Mostly pip downloading
# the dependencies: 5 minutes on a quiet machine, 28 on this project's busy 2-core one.
#   scripts/wheel_check.sh [WORKDIR]     (default /tmp/wheeltest; a clip from ../shared/realspeech-dev, else a tone)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mkdir -p "${1:-/tmp/wheeltest}" && cd "${1:-/tmp/wheeltest}" && pwd)"
python="${PYTHON:-python3.11}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

rm -rf "$work/dist" "$work/venv" "$work/run"
"$python" -m pip wheel --no-deps -q -w "$work/dist" "$repo"
wheel="$(ls "$work"/dist/speechllm-*.whl)"
echo "[wheel] built $(basename "$wheel"); recipes inside: $(unzip -l "$wheel" | grep -c 'speechllm/recipes/.*\.yaml')"
"$python" -m venv "$work/venv"
"$work/venv/bin/pip" install -q torch==2.13.0
"$work/venv/bin/pip" install -q "$wheel"
mkdir -p "$work/run" && cd "$work/run"   # nothing of the checkout is reachable from here
bin="$work/venv/bin"
"$bin/python" -c "import speechllm, sys; assert '$repo' not in speechllm.__file__, speechllm.__file__; print('[wheel] speechllm from', speechllm.__file__)"
"$bin/speechllm" quickstart --help >/dev/null && echo "[wheel] quickstart --help: ok"

clip="$(ls "$repo"/../shared/realspeech-dev/*/*.wav "$repo"/../shared/realspeech-dev/*.wav 2>/dev/null | head -1 || true)"
if [ -z "$clip" ]; then
    clip="$work/run/tone.wav"
    "$bin/python" -c "import numpy as np, soundfile as sf; t = np.arange(32000) / 16000; sf.write('$clip', 0.3 * np.sin(2 * np.pi * 220 * t), 16000)"
fi
"$bin/speechllm" infer "$clip" --out answers.jsonl
"$bin/python" -c "import json; line = json.loads(open('answers.jsonl').read()); assert 'error' not in line, line; print('[wheel] infer:', line)"

"$bin/python" -c "from speechllm.data.toy import build_tone_corpus as b; b('runs/toy', 40); b('runs/toy', 8, seed=1, name='dev')"
"$bin/speechllm" train tiny stages.0.steps=2 stages.1.steps=2 save_every=0 output_dir=runs/tiny
test -f runs/tiny/final/config.json && echo "[wheel] train tiny (packaged recipe by name): ok"
# Without the eval extra, eval names the extra to install instead of failing deep inside.
if "$bin/speechllm" eval runs/tiny/final runs/toy/dev.jsonl 2>err.txt; then echo "eval ran without the eval extra?"; exit 1; fi
grep -q "pip install 'speechllm\[eval\]'" err.txt && echo "[wheel] eval without the extra: $(cat err.txt)"
"$bin/python" -c "import sys, speechllm.cli, speechllm.data.synth; assert 'piper' not in sys.modules; print('[wheel] no GPL piper imported')"
echo "[wheel] all checks passed"
