"""Serving: an OpenAI-compatible HTTP API (chat with audio, transcriptions), metadata, and a web page.

    from speechllm.serving import create_app, ServerConfig
    app = create_app(model, ServerConfig(api_key="secret"))    # a FastAPI app; `serve(...)` runs uvicorn
    app = create_app({"default": model, "gemma-bridge": other})  # several: requests pick one by `model`

Modules: app (factory, serve, model ids), context (the served models, picking one by id), routes and chat
(endpoints), schemas (request/response bodies), batcher and engine (batched generation on one thread per model),
limits (size, format, duration, auth, audio URLs), remote_audio (http(s) audio URLs: checked addresses, one
deadline, their own threads), security (Host, cross-site, API key before the body, body deadline, headers), config.
"""

from speechllm.extras import require_extra

require_extra("serve", "speechllm serve (speechllm.serving)")  # before fastapi is imported below

from .app import create_app, serve  # noqa: E402
from .config import ServerConfig  # noqa: E402

__all__ = ["ServerConfig", "create_app", "serve"]
