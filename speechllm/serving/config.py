"""Server settings: limits, batching, auth and audio-URL policy, read from a YAML file (unknown keys are an error)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..config import from_dict
from ..errors import ConfigError


@dataclass
class ServerConfig:
    """Everything `create_app` needs besides the model. Every field can be set in `--config limits.yaml`."""

    model_name: str = "speechllm"  # the first model's id (default: its folder or packaged name), as /v1/models lists it
    # when set, every route but /, /static and a bare /health needs `Authorization: Bearer <api_key>`
    api_key: str | None = None
    # browsers: Host names this server answers to ("*": any). None: `serve` derives them from --host (loopback:
    # localhost and loopback addresses; an address: that address); `create_app` alone checks none
    allowed_hosts: list[str] | None = None
    body_timeout_s: float = 60.0  # the whole request body must arrive within this (408 after), however slowly it drips
    # limits
    max_body_bytes: int = 25 * 1024 * 1024
    max_audio_seconds: float = 60.0
    max_clips_per_request: int = 8
    max_turns: int = 256  # messages in one conversation
    max_prompt_chars: int = 200_000  # text characters of all messages together, counted before tokenising
    max_prompt_tokens: int = 16_384  # prompt tokens (audio positions included); the model's own positions bound it too
    max_tokens_limit: int = 2048  # the largest max_tokens a request may ask for
    default_max_tokens: int = 256
    request_timeout_s: float = 120.0  # from queueing to the answer; generation is stopped when it passes
    # admission: beyond these a request is refused at once with Retry-After, rather than held in memory
    max_concurrent: int = 64  # POST /v1/* requests in progress at once (503 beyond), counted before the body is read
    max_queued: int = 256  # requests waiting for one model's worker (429 beyond)
    # batching: requests of the same kind and settings that arrive within the window run as one generate
    batching: bool = True
    batch_window_ms: float = 10.0
    max_batch_size: int = 16
    # audio_url content parts: data: URLs always; http(s) and file:// only when enabled here
    allow_remote_audio_urls: bool = False
    remote_audio_timeout_s: float = 10.0  # the whole download, every redirect included, from connect to last byte
    max_concurrent_downloads: int = 4  # remote audio downloads run on their own threads, never on the decoders'
    # networks remote audio URLs may reach besides public addresses (e.g. ["10.0.0.0/8"]); loopback, private,
    # link-local, multicast and reserved addresses are refused unless listed here
    remote_audio_allowed_networks: list[str] = field(default_factory=list)
    local_audio_dir: str | None = None  # file:// URLs must resolve inside this folder

    def __post_init__(self):
        positive = ["max_body_bytes", "max_audio_seconds", "max_clips_per_request", "max_turns", "max_prompt_chars",
                    "max_prompt_tokens", "max_tokens_limit", "default_max_tokens", "request_timeout_s",
                    "max_concurrent", "max_queued", "max_batch_size", "remote_audio_timeout_s", "body_timeout_s",
                    "max_concurrent_downloads"]
        bad = [name for name in positive if not getattr(self, name) > 0]
        if bad or self.batch_window_ms < 0:
            raise ConfigError(f"server config: {bad or ['batch_window_ms']} must be positive (batch_window_ms >= 0)")
        if self.default_max_tokens > self.max_tokens_limit:
            raise ConfigError("server config: default_max_tokens is larger than max_tokens_limit")
        if self.local_audio_dir is not None and not Path(self.local_audio_dir).is_dir():
            raise ConfigError(f"server config: local_audio_dir {self.local_audio_dir!r} is not a folder")
        check_api_key_setting(self.api_key)
        hosts = self.allowed_hosts
        if hosts is not None and not (isinstance(hosts, list) and all(isinstance(h, str) and h.strip() for h in hosts)):
            raise ConfigError(f"server config: allowed_hosts must be a list of host names, got {self.allowed_hosts!r}")
        try:
            [ipaddress.ip_network(n, strict=False) for n in self.remote_audio_allowed_networks]
        except (TypeError, ValueError) as e:
            raise ConfigError(f"server config: remote_audio_allowed_networks: {e} (give CIDR networks such as "
                              f"'10.0.0.0/8')") from None

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides) -> ServerConfig:
        """Settings from a YAML mapping (None: defaults), then `overrides` that are not None (CLI flags)."""
        data = {}
        if path is not None:
            try:
                data = yaml.safe_load(Path(path).read_text()) or {}
            except (OSError, yaml.YAMLError) as e:
                raise ConfigError(f"server config {path}: cannot read it ({e})") from None
            if not isinstance(data, dict):
                raise ConfigError(f"server config {path}: expected a mapping of settings")
        data.update({k: v for k, v in overrides.items() if v is not None})
        return from_dict(cls, data, "server config")


def check_api_key_setting(key) -> None:
    """ConfigError for an API key that is set but empty or blank: it would otherwise read as "no key" and turn
    authentication off without a word."""
    if key is None:
        return
    if not isinstance(key, str) or not key.strip():
        raise ConfigError(f"server config: api_key {key!r} is empty or not text; give a real key, or leave it unset "
                          f"(and $SPEECHLLM_API_KEY unset) to serve without one")
