"""Guards in front of the model: body size, concurrency, API key, audio formats, base64, duration, audio URLs.

Each check raises APIError with the status OpenAI-style clients expect (401, 400, 413, 415) and a message that
says what to change.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import io
import json
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import soundfile as sf
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from ..audio import SAMPLE_RATE, check_format, load_audio
from ..audio_decode import sniff_format
from .config import ServerConfig
from .errors import APIError, error_body
from .remote_audio import fetch_remote_audio
from .schemas import AUDIO_FORMATS

_ALIASES = {"wave": "wav", "oga": "ogg", "opus": "ogg", "mpeg": "mp3", "x-wav": "wav", "x-flac": "flac"}


# -- whole requests -------------------------------------------------------------------------------------
class BodySizeLimit:
    """ASGI middleware: reads the body up to `max_bytes` (413 beyond), then hands it on in one piece.

    Buffering, rather than counting as the app reads, gives the same 413 for every route and body type;
    the buffer is bounded by the limit itself."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._too_large(send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client left before sending everything
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                return await self._too_large(send)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                body = b"".join(chunks)
                chunks.clear()  # the app owns the one copy now, and frees it once parsed
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # afterwards: http.disconnect when the client goes away

        await self.app(scope, replay, send)

    async def _too_large(self, send):
        body = json.dumps(error_body(413, f"the request body is larger than this server's limit of "
                                          f"{self.max_bytes} bytes (max_body_bytes)", "body_too_large")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class ConcurrencyLimit:
    """ASGI middleware: at most `max_concurrent` POST /v1/* requests in progress; beyond, 503 with Retry-After
    before the body is read, so a crowd of large requests cannot hold more than that many bodies in memory.
    GET routes (health, models, the page) are never refused."""

    def __init__(self, app, max_concurrent: int):
        self.app, self.max_concurrent, self.active = app, max_concurrent, 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].startswith("/v1/"):
            return await self.app(scope, receive, send)
        if self.active >= self.max_concurrent:
            body = json.dumps(error_body(503, f"this server is answering {self.active} requests, its limit "
                                              f"(max_concurrent): retry shortly", "server_busy")).encode()
            await send({"type": "http.response.start", "status": 503, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                (b"retry-after", b"1")]})
            return await send({"type": "http.response.body", "body": body})
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


async def read_json(request: Request, model: type[BaseModel]) -> BaseModel:
    """The request body parsed into `model` (400 when not JSON, 422 naming the field otherwise, as FastAPI's own
    parsing answers). Read from the stream, not cached on the request: the raw bytes are freed once parsed."""
    raw = b"".join([chunk async for chunk in request.stream()])
    try:
        return model.model_validate_json(raw)
    except ValidationError as e:
        raise RequestValidationError([{**x, "loc": ("body", *x["loc"])} for x in e.errors()]) from None


def check_api_key(config: ServerConfig, authorization: str | None) -> None:
    """401 unless the server has no key or `authorization` is `Bearer <key>` (constant-time comparison)."""
    if config.api_key is None:
        return
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), config.api_key.encode()):
        raise APIError(401, "missing or wrong API key: send the header `Authorization: Bearer <key>`",
                       "invalid_api_key")


# -- audio ----------------------------------------------------------------------------------------------
def b64decode(data: str, where: str) -> bytes:
    """Bytes of a base64 string (a `data:...;base64,` prefix is tolerated); 400 when it is not base64."""
    if data.startswith("data:"):
        data = data.partition(",")[2]
    try:
        raw = base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        raise APIError(400, f"{where} is not valid base64", "invalid_base64", where) from None
    if not raw:
        raise APIError(400, f"{where} is empty", "invalid_audio", where)
    return raw


def audio_format(data: bytes, declared: str | None = None, filename: str | None = None) -> str:
    """The container format: as declared, else from the file name, else from the bytes; 415 when unsupported."""
    name = declared or (Path(filename).suffix.lstrip(".") if filename and "." in filename else None)
    if name:
        name = _ALIASES.get(name.lower(), name.lower())
        if name in AUDIO_FORMATS:
            return name
        if declared:
            raise APIError(415, f"audio format {declared!r} is not supported; send one of {list(AUDIO_FORMATS)} "
                                f"(e.g. `ffmpeg -i IN -ar 16000 OUT.wav`)", "unsupported_audio_format")
    sniffed = sniff_format(data[:12])
    if sniffed in AUDIO_FORMATS:
        return sniffed
    what = sniffed or (f"'.{name}'" if name else "unknown")
    raise APIError(415, f"audio format {what} is not supported; send one of {list(AUDIO_FORMATS)} "
                        f"(browsers record webm/opus: encode WAV instead)", "unsupported_audio_format")


def decode_clip(data: bytes, fmt: str, config: ServerConfig, *, max_seconds: float | None = None,
                min_samples: int = 1, label: str = "audio") -> np.ndarray:
    """16 kHz mono float32 samples of one encoded clip. 413 when longer than the limit (read from the header
    first, so a long file is refused before it is decoded); AudioError (400) when it does not decode."""
    limit = min(x for x in (config.max_audio_seconds, max_seconds) if x is not None)
    check_format(data[:12], f"{label} ({fmt})", fmt)  # the bytes must be the declared container before libsndfile
    try:
        declared = sf.info(io.BytesIO(data)).duration
    except Exception:  # undecodable: load_audio below says why, in its own words
        declared = 0.0
    # max_seconds also sizes the decode budget (frames x channels) and stops a header that lied about its length.
    samples = None if declared > limit else load_audio(data, name=f"{label} ({fmt})", min_samples=min_samples,
                                                       format=fmt, max_seconds=limit)
    seconds = declared if samples is None else len(samples) / SAMPLE_RATE
    if seconds > limit:
        raise APIError(413, f"{label} is {seconds:.1f} s long; this server accepts clips of at most {limit:g} s",
                       "audio_too_long")
    return samples


async def fetch_audio_url(url: str, config: ServerConfig, where: str) -> tuple[bytes, str | None]:
    """(bytes, declared format or None) of an audio_url part. data: URLs always; http(s) and file:// only when
    the config enables them, and file:// only inside `local_audio_dir` (checked on the resolved path)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "data":
        media = url[5:].partition(",")[0].split(";")[0]
        subtype = media.partition("/")[2].lower() or None
        return b64decode(url, where), _ALIASES.get(subtype, subtype) if subtype else None
    if scheme in ("http", "https"):
        if not config.allow_remote_audio_urls:
            raise APIError(400, f"{where}: http(s) audio URLs are disabled on this server; send the audio as "
                                f"input_audio (base64), or enable allow_remote_audio_urls in the server config",
                           "audio_url_not_allowed", where)
        return await fetch_remote_audio(url, config, where), None  # checked addresses, one deadline
    if scheme == "file":
        return _local_file(parts, config, where), None
    raise APIError(400, f"{where}: unsupported URL scheme {scheme!r}; use data:, http(s): or file:",
                   "audio_url_not_allowed", where)


def _local_file(parts, config: ServerConfig, where: str) -> bytes:
    if config.local_audio_dir is None:
        raise APIError(400, f"{where}: file:// audio URLs are disabled on this server; send the audio as "
                            f"input_audio, or set local_audio_dir in the server config", "audio_url_not_allowed", where)
    if parts.netloc not in ("", "localhost"):
        raise APIError(400, f"{where}: file:// URLs must name a local path", "audio_url_not_allowed", where)
    if "\x00" in unquote(parts.path):  # %00: no file name holds one, and Path would raise ValueError
        raise APIError(400, f"{where}: file:// URLs must not hold a NUL byte (%00)", "audio_url_not_allowed", where)
    root = Path(config.local_audio_dir).resolve()
    path = Path(unquote(parts.path)).resolve()  # resolves '..' and symbolic links before the check
    if not path.is_relative_to(root):
        raise APIError(400, f"{where}: file:// URLs must point inside the allowed folder local_audio_dir",
                       "audio_url_not_allowed", where)
    if not path.is_file():
        raise APIError(400, f"{where}: no such file under the allowed folder: {parts.path}", "audio_url_not_found",
                       where)
    if path.stat().st_size > config.max_body_bytes:
        raise APIError(413, f"{where}: the file is larger than {config.max_body_bytes} bytes", "audio_too_large", where)
    return path.read_bytes()
