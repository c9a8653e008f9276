"""The HTTP server: `create_app(models, config)` builds the FastAPI app (tests use it in-process), `serve` runs it."""

from __future__ import annotations

import ipaddress
import logging
import os
import time
from collections.abc import Mapping
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from .. import __version__, load
from ..errors import ConfigError
from . import chat, routes
from .batcher import Batcher
from .config import ServerConfig, check_api_key_setting
from .context import ServedModel, ServerState
from .errors import install_handlers
from .limits import BodySizeLimit, ConcurrencyLimit
from .security import BodyDeadline, BrowserGuard, KeyGuard

log = logging.getLogger("speechllm.serving")


def create_app(models, config: ServerConfig | None = None) -> FastAPI:
    """A FastAPI app serving one model (a SpeechLLMForConditionalGeneration with its processor, served as
    `config.model_name`) or several: a mapping {id: model}, in order, whose first model answers requests that
    name none. Requests pick a model by their `model` field; GET /v1/models lists them.

    Each model runs on its own worker thread, started by the app's lifespan: use the app under uvicorn, or as
    `with TestClient(app) as client:` so the lifespan runs. Limits and auth are the server's, shared by all.
    The API docs are /openapi.json only: FastAPI's /docs and /redoc pages load scripts from a CDN."""
    config = config or ServerConfig()
    check_api_key_setting(config.api_key)  # also when set on the object after it was built
    if not isinstance(models, Mapping):
        models = {config.model_name: models}
    if not models:
        raise ConfigError("create_app: give at least one model to serve")
    served = {str(model_id): ServedModel(str(model_id), model, Batcher(
        model, enabled=config.batching, window_ms=config.batch_window_ms, max_batch_size=config.max_batch_size,
        max_queued=config.max_queued)) for model_id, model in models.items()}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        for entry in served.values():
            await entry.batcher.start()
        try:
            yield
        finally:
            for entry in served.values():
                await entry.batcher.stop()

    app = FastAPI(title="speechllm", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="OpenAI-compatible chat and transcription for speech LLMs, plus speaker metadata.")
    app.state.speechllm = ServerState(served, config, int(time.time()))
    # The last added runs first: browser checks, then the key (before any body is read), then the concurrency limit
    # (only for callers with the key), then the body's deadline and size.
    app.add_middleware(BodySizeLimit, max_bytes=config.max_body_bytes)
    app.add_middleware(BodyDeadline, seconds=config.body_timeout_s)
    app.add_middleware(ConcurrencyLimit, max_concurrent=config.max_concurrent)
    app.add_middleware(KeyGuard, config=config)
    app.add_middleware(BrowserGuard, config=config)
    install_handlers(app)
    app.include_router(routes.public)
    app.include_router(routes.router)
    app.include_router(chat.router)
    chat.document_request_body(app)
    app.mount("/static", StaticFiles(directory=routes.STATIC), name="static")
    return app


def serve(models=None, *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          config: str | Path | ServerConfig | None = None, log_level: str = "info", precision: str = "auto") -> None:
    """Load the models and serve them with uvicorn until stopped. `models`: None for the default model; one
    model (a folder, hub id, packaged name such as "gemma-bridge", or a model object); a list of them; or a
    mapping {id: model}. See `model_ids` for the ids. The API key comes from `api_key`, else the config file,
    else $SPEECHLLM_API_KEY; a key that is set but empty is a ConfigError, never "no key". Without
    `allowed_hosts` in the config, the Host names accepted follow `host` (see `default_allowed_hosts`). `precision`
    ("auto", "fp32", "bf16") is how models given by name load (speechllm.models.precision)."""
    import uvicorn

    from ..models.precision import precision_dtype

    if not isinstance(config, ServerConfig):
        config = ServerConfig.load(config, api_key=api_key)
    elif api_key is not None:
        config.api_key = api_key
    if config.api_key is None:
        config.api_key = os.environ.get("SPEECHLLM_API_KEY")
    check_api_key_setting(config.api_key)
    if config.allowed_hosts is None:
        config.allowed_hosts = default_allowed_hosts(host)
    if config.api_key is None and not _loopback(host):
        log.warning("serving on %s without an API key: anyone who can reach it can use the model", host)
    named = model_ids(models, config)  # names checked before any model loads
    config.model_name = next(iter(named))
    dtype = precision_dtype(precision)
    loaded = {model_id: load(model, dtype=dtype) if model is None or isinstance(model, (str, Path)) else model
              for model_id, model in named.items()}
    uvicorn.run(create_app(loaded, config), host=host, port=port, log_level=log_level)


def model_ids(models, config: ServerConfig) -> dict:
    """{id: model as given} for `serve`. A mapping's keys are the ids; `ID=PATH` is served as ID; any other folder,
    hub id or packaged name under its last path component ("runs/a/final" -> "final", "gemma-bridge" ->
    "gemma-bridge"); a model object or None (the default model) under `config.model_name`, which, set in the
    config, also renames a first model not named so. ConfigError when two models would share an id."""
    if isinstance(models, Mapping):
        named = [(str(k), v, True) for k, v in models.items()]
    else:
        given = list(models) if isinstance(models, (list, tuple)) else [models]
        named = [_id_and_model(model, config) for model in given or [None]]
    if config.model_name != ServerConfig.model_name and not named[0][2]:
        named[0] = (config.model_name, named[0][1], True)
    ids = [model_id for model_id, _, _ in named]
    twice = sorted({x for x in ids if ids.count(x) > 1})
    if twice:
        raise ConfigError(f"two models would both be served as {twice}: name them, e.g. `speechllm serve "
                          f"a=runs/a/final b=runs/b/final`")
    return {model_id: model for model_id, model, _ in named}


def _id_and_model(model, config: ServerConfig) -> tuple[str, object, bool]:
    """(id, model, whether the id was given explicitly as ID=PATH)."""
    if not isinstance(model, (str, Path)):
        return config.model_name, model, False
    text = str(model)
    model_id, sep, path = text.partition("=")
    if sep and model_id and path and not Path(text).exists():  # an existing path wins, even with "=" in its name
        return model_id, path, True
    return Path(text).name or text, model, False


def default_allowed_hosts(host: str) -> list[str] | None:
    """The Host header names a server bound to `host` answers to: loopback -> localhost and the loopback
    addresses; another name or address -> that one; all interfaces (0.0.0.0, ::) -> None (any: the names clients
    use are unknown here; set allowed_hosts)."""
    if host in ("", "0.0.0.0", "::"):
        log.warning("serving on all interfaces: set allowed_hosts in the server config to the names clients use, so "
                    "that pages on other domains cannot reach the server through DNS rebinding")
        return None
    if _loopback(host):
        return ["localhost", "127.0.0.1", "::1", host]
    return [host]


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
