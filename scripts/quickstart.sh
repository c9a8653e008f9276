#!/usr/bin/env bash
# Set up (if needed) and run the quick start. Extra arguments go to `speechllm quickstart`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
real=../shared/realspeech-dev/manifest.jsonl   # real recordings beside this checkout, when there are some
if [ -f "$real" ]; then set -- --real "$real" "$@"; fi
exec .venv/bin/speechllm quickstart "$@"
