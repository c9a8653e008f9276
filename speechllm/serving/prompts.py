"""A request's prompt, checked and tokenised in the handler, before it is queued.

The caps on turns, characters and clips come first (cheap, before any audio is decoded); then the prompt is
tokenised off the event loop and held against `max_prompt_tokens` and the model's positions. A request that cannot
be answered gets its 400 without reaching the model's worker, and the worker's batches hold only prompts known to
fit: one bad request never fails a batch.
"""

from __future__ import annotations

import asyncio
import dataclasses

from ..errors import InputError, SpeechLLMError
from ..models.positions import room_for_answer
from ..prompting import instruction_for, prompt_message
from .config import ServerConfig
from .context import ServedModel
from .engine import GenerateSettings, Job, MetaSettings
from .errors import APIError


def check_messages(config: ServerConfig, messages: list, clips_per_prompt: int | None = None) -> int:
    """The number of audio parts of chat `messages` (schemas.ChatMessage). 400 for more than `max_turns` messages,
    text over `max_prompt_chars`, more than `max_clips_per_request` clips, or a clip count other than the model's
    `clips_per_prompt`. (A lone UTF-16 surrogate never gets here: the JSON parser refuses it, 400.)"""
    if len(messages) > config.max_turns:
        raise APIError(400, f"the conversation has {len(messages)} messages; this server accepts at most "
                            f"{config.max_turns} (max_turns)", "too_many_turns", "messages")
    chars = clips = 0
    for i, message in enumerate(messages):
        parts = [message.content] if isinstance(message.content, str) else message.content
        for j, part in enumerate(parts):
            where = f"messages[{i}].content" + ("" if isinstance(message.content, str) else f"[{j}]")
            text = part if isinstance(part, str) else part.text if part.type == "text" else None
            if text is None:
                clips += 1
                if clips > config.max_clips_per_request:
                    raise APIError(400, f"{where}: more than {config.max_clips_per_request} audio clips in one "
                                        f"request (max_clips_per_request)", "too_many_clips", where)
                continue
            chars += len(text)
            if chars > config.max_prompt_chars:
                raise APIError(400, f"{where}: the messages' text is longer than this server's limit of "
                                    f"{config.max_prompt_chars} characters (max_prompt_chars)", "prompt_too_long",
                               where)
    if clips_per_prompt is not None and clips != clips_per_prompt:
        raise APIError(400, f"this model reads exactly {clips_per_prompt} audio clip(s) per conversation; this "
                            f"request has {clips}", "invalid_request", "messages")
    return clips


async def encode_prompt(config: ServerConfig, served: ServedModel, conversation: list[dict],
                        where: str = "messages"):
    """(the processor's encoding of `conversation`, audio positions expanded; the new tokens its positions leave,
    None when unbounded). Tokenises off the event loop. 400 over `max_prompt_tokens`, when the prompt alone fills
    the model's positions, or when the text cannot be tokenised."""
    model = served.model
    try:
        encoded = await asyncio.to_thread(model.processor.encode, conversation)
    except SpeechLLMError:
        raise
    except Exception as e:  # a tokenizer that cannot take this text: the client's text, not the server, is wrong
        raise APIError(400, f"{where}: the text cannot be tokenised ({type(e).__name__}: {e})", "invalid_text",
                       where) from None
    tokens = len(encoded.input_ids)
    if tokens > config.max_prompt_tokens:
        raise APIError(400, f"{where}: the prompt is {tokens} tokens (audio positions included); this server "
                            f"accepts at most {config.max_prompt_tokens} (max_prompt_tokens)", "prompt_too_long", where)
    try:
        room = room_for_answer(model.max_positions, tokens)
    except InputError as e:
        raise APIError(400, f"{where}: {e}", "prompt_too_long", where) from None
    return encoded, room


async def generate_job(config: ServerConfig, served: ServedModel, conversation: list[dict],
                       settings: GenerateSettings, where: str = "messages") -> Job:
    """A text-answer job whose prompt is tokenised and checked, and whose max_tokens fits the positions left."""
    encoded, room = await encode_prompt(config, served, conversation, where)
    if room is not None and room < settings.max_tokens:
        settings = dataclasses.replace(settings, max_tokens=room)  # the answer ends at the model's last position
    return Job("generate", encoded, settings)


async def meta_job(config: ServerConfig, served: ServedModel, clip: tuple, settings: MetaSettings) -> Job:
    """A metadata job about one (samples, rate) clip, asked as the model was trained (the fields' instruction)."""
    names = list(settings.fields) if settings.fields else served.schema.names
    conversation = [prompt_message(instruction_for(names, served.schema), clip)]
    encoded, _ = await encode_prompt(config, served, conversation)
    return Job("meta", encoded, settings)
