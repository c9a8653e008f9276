"""What Gemma weights need beyond the weights: a chat template, the tokens that end a turn, and the Gemma terms'
notice that must travel with the weights and anything derived from them.

Gemma's base checkpoints (such as google/gemma-3-270m in a GGUF) carry no chat template; GEMMA_CHAT_TEMPLATE is
Gemma's own turn format, written so that speechllm's processor can cut it at every assistant turn:

    <bos><start_of_turn>user
    {system}\n\n{user}<end_of_turn>
    <start_of_turn>model
    {assistant}<end_of_turn>

A system message is folded into the first user turn, as Gemma's instruction-tuned template does (Gemma has no
system role). The template is prefix-stable: adding a turn never changes how the earlier turns render. Content is
not trimmed, so an answer's text is trained exactly as given. <end_of_turn> closes every turn and stops generation.
"""

import json
from pathlib import Path

GEMMA_NOTICE = "Gemma is provided under and subject to the Gemma Terms of Use found at ai.google.dev/gemma/terms"

GEMMA_NOTICE_FILE = "GEMMA_NOTICE.md"  # beside the weights of a converted Gemma and of every model saved from it

GEMMA_NOTICE_TEXT = f"""# Notice

{GEMMA_NOTICE}

The weights in this folder are Gemma weights or are derived from them ("Model Derivatives" in the Gemma Terms of
Use), and their use is subject to the Gemma Prohibited Use Policy at ai.google.dev/gemma/prohibited_use_policy.
Anyone who distributes them must pass on these terms and this notice.
"""

# Appended to the notice in a folder converted from GGUF: the terms ask modified files to say they were modified.
GEMMA_CONVERSION_NOTE = """
Modified files: speechllm converted the weights from a GGUF file (llama.cpp's format) into this transformers folder,
de-quantising them to float32, and added a chat template (chat_template.jinja) and generation settings that end a
turn at <end_of_turn>. Models trained on top of them may add further weights (adapters, connectors).
"""

START_OF_TURN, END_OF_TURN = "<start_of_turn>", "<end_of_turn>"

GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}"
    "{%- if not loop.first -%}{{ raise_exception('Gemma takes a system message only as the first message') }}"
    "{%- endif -%}"
    "{{ '<start_of_turn>user\\n' + message['content'] + '\\n\\n' }}"
    # the system text opens the first user turn; with no user turn after it, it closes its own turn
    "{%- if loop.nextitem is not defined or loop.nextitem['role'] != 'user' -%}{{ '<end_of_turn>\\n' }}{%- endif -%}"
    "{%- elif message['role'] == 'user' -%}"
    "{%- if loop.previtem is not defined or loop.previtem['role'] != 'system' -%}{{ '<start_of_turn>user\\n' }}"
    "{%- endif -%}"
    "{{ message['content'] + '<end_of_turn>\\n' }}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{ '<start_of_turn>model\\n' + message['content'] + '<end_of_turn>\\n' }}"
    "{%- else -%}{{ raise_exception('Gemma has no role ' + message['role'] + '; use system, user or assistant') }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)


def is_gemma(model_type: str | None) -> bool:
    """Whether a transformers model_type (or a GGUF general.architecture) is one of the Gemma family."""
    return bool(model_type) and model_type.lower().startswith("gemma")


def gemma_notice_in_folder(folder: Path) -> dict[str, str]:
    """{GEMMA_NOTICE_FILE: text} for a local transformers folder holding Gemma weights, else {}.

    An existing notice file is passed on verbatim; a Gemma config.json without one gets the standard text."""
    notice = folder / GEMMA_NOTICE_FILE
    if notice.is_file():
        return {GEMMA_NOTICE_FILE: notice.read_text(encoding="utf-8")}
    config = folder / "config.json"
    if config.is_file():
        fields = json.loads(config.read_text(encoding="utf-8"))
        if is_gemma(fields.get("model_type")) or is_gemma((fields.get("text_config") or {}).get("model_type")):
            return {GEMMA_NOTICE_FILE: GEMMA_NOTICE_TEXT}
    return {}
