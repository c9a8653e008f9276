"""Everything but chat: health, models, schema, transcriptions, metadata, and the web page."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse, PlainTextResponse
from starlette.datastructures import UploadFile as StarletteUpload

from ..audio import SAMPLE_RATE
from ..prompting import instructions, prompt_message
from .context import answer, authorized, clip_from_bytes, parse_fields, state
from .engine import GenerateSettings, MetaSettings
from .errors import APIError
from .limits import b64decode, read_json
from .prompts import generate_job, meta_job
from .schemas import (
    Health,
    MetadataRequest,
    MetadataResponse,
    ModelCard,
    ModelList,
    SchemaField,
    SchemaResponse,
    Transcription,
    Usage,
    VerboseTranscription,
)
from .security import key_matches

STATIC = Path(__file__).parent / "static"

public = APIRouter()
router = APIRouter(dependencies=[Depends(authorized)])


@public.get("/", include_in_schema=False)
async def page():
    return FileResponse(STATIC / "index.html")


@public.get("/health", response_model=Health, response_model_exclude_none=True)
async def health(request: Request):
    """Liveness for anyone; the model, busy and queued only with the API key when the server has one."""
    server = state(request)
    if not key_matches(server.config, request.headers.get("authorization")):
        return Health(auth_required=True)
    batchers = [served.batcher for served in server.models.values()]
    return Health(model=server.default.id, auth_required=server.config.api_key is not None,
                  busy=any(b.busy for b in batchers), queued=sum(b.queued for b in batchers))


@router.get("/v1/models", response_model=ModelList)
async def models(request: Request):
    """Every model this server serves; the first answers requests that name none."""
    server = state(request)
    return ModelList(data=[ModelCard(id=model_id, created=server.created) for model_id in server.models])


@router.get("/v1/schema", response_model=SchemaResponse)
async def schema(request: Request, model: str | None = Query(None, description="a served model's id (absent: "
                                                                               "the first model)")):
    """The model's metadata fields (name, kind, labels) and the JSON Schema of a full answer."""
    model_schema = state(request).pick(model).schema
    fields = [SchemaField(name=f.name, kind=f.kind, labels=list(f.labels), description=f.description,
                          speaker=f.speaker) for f in model_schema.fields]
    return SchemaResponse(fields=fields, json_schema=model_schema.json_schema())


@router.post("/v1/audio/transcriptions", response_model=Transcription | VerboseTranscription,
             responses={200: {"content": {"text/plain": {"description": "with response_format=text"}}}})
async def transcriptions(request: Request, file: UploadFile = File(description="wav, mp3, flac or ogg"),
                         model: str | None = Form(None, description="a served model's id (absent: the first)"),
                         response_format: Literal["json", "text", "verbose_json"] = Form("json"),
                         temperature: float = Form(0.0, ge=0, le=2, description="0: greedy"),
                         language: str | None = Form(None, description="ignored"),
                         prompt: str | None = Form(None, description="ignored")):
    """OpenAI's transcription upload: the model's plain ASR instruction about the clip."""
    server = state(request)
    served = server.pick(model)
    clip = await clip_from_bytes(server, served, await file.read(), "file", filename=file.filename)
    settings = GenerateSettings(max_tokens=server.config.default_max_tokens, temperature=temperature)
    job = await generate_job(server.config, served, [prompt_message(instructions("asr")[0], (clip, SAMPLE_RATE))],
                             settings, "file")
    result = await answer(request, served, job)
    if response_format == "text":
        return PlainTextResponse(result.text)
    if response_format == "verbose_json":
        return VerboseTranscription(duration=round(len(clip) / SAMPLE_RATE, 3), text=result.text)
    return Transcription(text=result.text)


_METADATA_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": MetadataRequest.model_json_schema()},
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary", "description": "wav, mp3, flac or ogg"},
        "fields": {"type": "array", "items": {"type": "string"},
                   "description": "metadata fields, repeated or comma-separated (absent: all)"},
        "model": {"type": "string", "description": "a served model's id (absent: the first)"},
        "min_confidence": {"type": "number", "minimum": 0, "maximum": 1,
                           "description": "labels below this confidence come back null: not sure"}}}}}}}


def _form_probability(value, name: str) -> float | None:
    """A multipart field that holds a number from 0 to 1, or None when absent; APIError 400 otherwise."""
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if not 0 <= number <= 1:
        raise APIError(400, f"{name} must be a number from 0 to 1, got {str(value)[:40]!r}", "invalid_request", name)
    return number


@router.post("/v1/metadata", response_model=MetadataResponse, openapi_extra=_METADATA_BODY)
async def metadata(request: Request):
    """Schema-valid speaker metadata about one clip (multipart `file` or JSON with base64), with confidences."""
    server = state(request)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        form = await request.form()
        upload = form.get("file")
        if not isinstance(upload, StarletteUpload):
            raise APIError(400, "multipart body needs a `file` part with the audio", "invalid_request", "file")
        fields = form.getlist("fields") or None
        if fields and not all(isinstance(f, str) for f in fields):
            raise APIError(400, "`fields` must be plain form fields, not files", "invalid_request", "fields")
        raw, declared, filename = await upload.read(), form.get("format"), upload.filename
        model = form.get("model") if isinstance(form.get("model"), str) else None
        min_confidence = _form_probability(form.get("min_confidence"), "min_confidence")
    elif kind in ("application/json", ""):
        body = await read_json(request, MetadataRequest)
        raw, declared, filename, fields = b64decode(body.audio, "audio"), body.format, None, body.fields
        model, min_confidence = body.model, body.min_confidence
    else:
        raise APIError(415, f"send application/json or multipart/form-data, not {kind!r}", "unsupported_media_type")
    served = server.pick(model)
    names = parse_fields(served, fields, "fields")
    clip = await clip_from_bytes(server, served, raw, "audio", declared if isinstance(declared, str) else None,
                                 filename)
    del raw  # decoded: a queued request holds the samples only
    job = await meta_job(server.config, served, (clip, SAMPLE_RATE), MetaSettings(names, min_confidence=min_confidence))
    result = await answer(request, served, job)
    meta = result.metadata
    return MetadataResponse(model=served.id, metadata=meta.values, confidences=meta.confidences,
                            valid=meta.valid, error=meta.error, text=result.text,
                            usage=Usage(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
                                        total_tokens=result.prompt_tokens + result.completion_tokens))
