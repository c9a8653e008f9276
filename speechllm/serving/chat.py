"""POST /v1/chat/completions: OpenAI chat with audio parts, streaming, and schema-valid metadata answers."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from ..audio import SAMPLE_RATE
from .context import ServedModel, ServerState, answer, authorized, clip_from_bytes, parse_fields, state
from .engine import Answer, GenerateSettings, Job, MetaSettings
from .errors import APIError, error_body
from .limits import b64decode, fetch_audio_url, read_json
from .prompts import check_messages, generate_job, meta_job
from .schemas import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    Delta,
    MetadataExtension,
    Usage,
)

router = APIRouter(dependencies=[Depends(authorized)])


_STREAM_DOC = {"description": "with stream: true: chat.completion.chunk events, then [DONE]"}
_BODY_DOC = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/ChatCompletionRequest"}}}}}
SEED_RANGE = (0, 2**63 - 1)  # what torch.manual_seed takes


@router.post("/v1/chat/completions", response_model=ChatCompletion, response_model_exclude_none=True,
             responses={200: {"content": {"text/event-stream": _STREAM_DOC}}}, openapi_extra=_BODY_DOC)
async def chat_completions(request: Request):
    """Answer a conversation whose user turns may hold audio. With `response_format` json_schema (or the
    `speechllm` extension) the answer is schema-valid metadata JSON about the one clip, with confidences.
    `model` picks one of the served models (absent: the first)."""
    # Parsed here rather than by FastAPI, which would keep the raw bytes and the parsed JSON until the answer:
    # a queued request holds its decoded clips and nothing more.
    body = await read_json(request, ChatCompletionRequest)
    server = state(request)
    served = server.pick(body.model)
    fields = metadata_fields(served, body)  # the cheap checks before any audio is decoded
    limit = body.max_completion_tokens or body.max_tokens
    if limit is not None and limit > server.config.max_tokens_limit:
        raise APIError(400, f"max_tokens={limit} is above this server's limit of {server.config.max_tokens_limit} "
                            f"(max_tokens_limit)", "max_tokens_too_large", "max_tokens")
    if body.seed is not None and not SEED_RANGE[0] <= body.seed <= SEED_RANGE[1]:
        raise APIError(400, f"seed must be a whole number from 0 to 2**63 - 1, got {body.seed}", "invalid_seed", "seed")
    clip_count = check_messages(server.config, body.messages, served.model.processor.coupling.clips_per_prompt)
    if fields is not None and clip_count != 1:
        raise APIError(400, f"metadata answers are about one clip; this request has {clip_count} audio parts",
                       "invalid_request", "messages")
    conversation, clips = await to_conversation(server, served, body)
    if fields is not None:
        job = await meta_job(server.config, served, clips[0], MetaSettings(fields or None, limit))
    else:
        settings = GenerateSettings(max_tokens=limit or server.config.default_max_tokens,
                                    temperature=body.temperature or 0.0, top_p=body.top_p, seed=body.seed,
                                    min_tokens=body.min_tokens or 0)
        job = await generate_job(server.config, served, conversation, settings)
    del conversation, clips  # the job holds the prompt now
    cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    if body.stream:
        usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_stream(request, server, served, job, cid, created, usage),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    result = await answer(request, served, job)
    return ChatCompletion(id=cid, created=created, model=served.id, usage=_usage(result),
                          choices=[Choice(message=AssistantMessage(content=result.text),
                                          finish_reason=result.finish_reason)],
                          speechllm=_extension(result))


def document_request_body(app) -> None:
    """Publish ChatCompletionRequest (read by the handler itself, so FastAPI does not see it) in the app's
    OpenAPI components, where the chat route's request body refers to it."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            spec = build()
            schema = ChatCompletionRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            components = spec.setdefault("components", {}).setdefault("schemas", {})
            components.update(schema.pop("$defs", {}))
            components["ChatCompletionRequest"] = schema
        return app.openapi_schema

    app.openapi = openapi


async def to_conversation(server: ServerState, served: ServedModel,
                          body: ChatCompletionRequest) -> tuple[list[dict], list]:
    """OpenAI messages -> the processor's conversation (audio parts as 16 kHz arrays), and the clips in order."""
    conversation, clips = [], []
    for i, message in enumerate(body.messages):
        role = "system" if message.role == "developer" else message.role
        if isinstance(message.content, str):
            conversation.append({"role": role, "content": message.content})
            continue
        parts = []
        for j, part in enumerate(message.content):
            where = f"messages[{i}].content[{j}]"
            if part.type == "text":
                parts.append({"type": "text", "text": part.text})
                continue
            if role != "user":
                raise APIError(400, f"{where}: only user messages may hold audio", "invalid_request", where)
            if part.type == "input_audio":
                raw, declared = b64decode(part.input_audio.data, f"{where}.input_audio.data"), part.input_audio.format
                part.input_audio.data = ""  # decoded below: a queued request need not keep the base64 text too
            else:
                raw, declared = await fetch_audio_url(part.audio_url.url, server.config, f"{where}.audio_url")
                part.audio_url.url = ""
            clips.append((await clip_from_bytes(server, served, raw, where, declared), SAMPLE_RATE))
            parts.append({"type": "audio", "audio": clips[-1]})
        conversation.append({"role": role, "content": parts})
    return conversation, clips


def metadata_fields(served: ServedModel, body: ChatCompletionRequest) -> tuple[str, ...] | None:
    """The metadata fields a request asks for: () for all, None when it asks for plain text."""
    if body.speechllm is not None:
        return parse_fields(served, body.speechllm.fields, "speechllm.fields") or ()
    fmt = body.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return ()
    properties = fmt.json_schema.schema_.get("properties") if fmt.json_schema else None
    if not isinstance(properties, dict) or not properties:
        raise APIError(400, f"response_format.json_schema.schema needs `properties` naming metadata fields of this "
                            f"model: {served.schema.names} (see GET /v1/schema)", "invalid_response_format",
                       "response_format")
    return parse_fields(served, list(properties), "response_format.json_schema.schema.properties")


def _usage(result: Answer) -> Usage:
    return Usage(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
                 total_tokens=result.prompt_tokens + result.completion_tokens)


def _extension(result: Answer) -> MetadataExtension | None:
    meta = result.metadata
    if meta is None:
        return None
    return MetadataExtension(metadata=meta.values, confidences=meta.confidences, valid=meta.valid, error=meta.error)


async def _stream(request: Request, server: ServerState, served: ServedModel, job: Job, cid: str, created: int,
                  include_usage: bool):
    """Server-sent events in OpenAI's chunk format, ending with `data: [DONE]`. Generation is stopped (the job's
    cancel event, read by a stopping criterion) when the client disconnects or the stream is closed early."""
    pieces: asyncio.Queue[str | None] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    if job.kind == "generate":  # metadata answers come whole: the constraint decodes them as one batch
        job.on_text = lambda piece: loop.call_soon_threadsafe(pieces.put_nowait, piece)
    task = asyncio.ensure_future(served.batcher.submit(job, server.config.request_timeout_s))
    task.add_done_callback(lambda _: pieces.put_nowait(None))  # also ends the loop when the job never ran

    def event(delta: Delta, finish=None, usage=None, extension=None) -> str:
        chunk = ChatCompletionChunk(id=cid, created=created, model=served.id, usage=usage,
                                    choices=[] if delta is None else [ChunkChoice(delta=delta, finish_reason=finish)])
        data = chunk.model_dump(exclude_none=True)
        if extension is not None:
            data["speechllm"] = extension.model_dump()
        return f"data: {json.dumps(data)}\n\n"

    try:
        yield event(Delta(role="assistant", content=""))
        while True:
            try:
                piece = await asyncio.wait_for(pieces.get(), 0.5)
            except TimeoutError:  # no token for a while: is anyone still listening?
                if await request.is_disconnected():
                    return
                continue
            if piece is None:
                break
            yield event(Delta(content=piece))
        result = await task
        if job.kind == "meta":
            yield event(Delta(content=result.text))
        yield event(Delta(), result.finish_reason, extension=_extension(result))
        if include_usage:
            yield event(None, usage=_usage(result))
    except APIError as e:
        yield f"data: {json.dumps(error_body(e.status, e.message, e.code, e.param))}\n\n"
    except Exception as e:  # the model failed mid-stream: the status line is sent already, so say it in-band
        status = 400 if isinstance(e, ValueError) else 500
        yield f"data: {json.dumps(error_body(status, str(e), 'generation_failed'))}\n\n"
    finally:
        job.cancel.set()  # a no-op after a finished answer; stops generation when the client left
        task.cancel()
    yield "data: [DONE]\n\n"
