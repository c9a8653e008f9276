"""llama.cpp's convert_hf_to_gguf.py (from the checkout in $LLAMA_CPP_DIR), for speechllm's tiny test tokenizer.

Their converter names a byte-level BPE tokenizer's pre-tokenizer by hashing how it splits a fixed text, and refuses
hashes it has no entry for. speechllm.testing's tokenizer is trained in the test, so no list has its hash; its
pre-tokenizer is GPT-2's byte-level split by construction (ByteLevel, add_prefix_space false), which llama.cpp calls
"gpt-2". Nothing else changes. Real LLMs' tokenizers are in their list: export those with the real script.
Used by tests/test_export_gguf.py and scripts/llamacpp_check.sh as `export_model(..., llama_cpp=<this folder>)`.
"""

import os
import runpy
import sys
from pathlib import Path

llama_cpp = Path(os.environ["LLAMA_CPP_DIR"])
sys.path[:0] = [str(llama_cpp), str(llama_cpp / "gguf-py")]

from conversion import base  # noqa: E402  (their package, found through the path above)

base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"
runpy.run_path(str(llama_cpp / "convert_hf_to_gguf.py"), run_name="__main__")
