"""The LLM's position limit: how many tokens (prompt, audio positions and answer together) one row may hold.

Whisper's decoder has 448 learned positions, GPT-2 1024: past them the position table raises IndexError in the
middle of a generate. Rotary models (Llama, Qwen, Gemma) compute positions, but read garbage past the length their
config names. Every generation is bounded here: new tokens by the positions a prompt leaves, and a prompt that
alone fills them is an InputError, before any compute.
"""

from __future__ import annotations

from ..errors import InputError

# Config fields that name the position limit, first match wins (Whisper's decoder: max_target_positions; GPT-2's
# n_positions answers as max_position_embeddings through its attribute map).
POSITION_FIELDS = ("max_target_positions", "max_position_embeddings")


def position_limit(llm_config) -> int | None:
    """Positions one row of the LLM may hold (prompt + answer), or None when its config names no limit."""
    for name in POSITION_FIELDS:
        value = getattr(llm_config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def room_for_answer(limit: int | None, prompt_tokens: int, where: str = "the prompt") -> int | None:
    """New tokens a prompt of `prompt_tokens` positions leaves (None: unbounded). InputError when the prompt
    alone fills the LLM's positions, naming both numbers and what to shorten."""
    if limit is None:
        return None
    if prompt_tokens >= limit:
        raise InputError(f"{where} takes {prompt_tokens} positions (text and audio tokens) and this model's LLM "
                         f"reads at most {limit}, answer included: shorten the text, the conversation or the audio")
    return limit - prompt_tokens


def bounded_new_tokens(limit: int | None, prompt_tokens: int, max_new_tokens: int | None,
                       where: str = "the prompt") -> int | None:
    """`max_new_tokens` cut to the room the prompt leaves (the room itself when None); InputError as
    `room_for_answer` when there is none."""
    room = room_for_answer(limit, prompt_tokens, where)
    if room is None:
        return max_new_tokens
    return room if max_new_tokens is None else min(max_new_tokens, room)
