"""Request and response bodies (pydantic): they validate requests and are the OpenAPI schema the server publishes.

Chat and transcription follow OpenAI's API; fields it does not have are marked as speechllm extensions.
Unknown request fields are ignored, as OpenAI clients send options this server has no use for.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

AUDIO_FORMATS = ("wav", "mp3", "flac", "ogg")


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


# -- chat completions --------------------------------------------------------------------------------
class InputAudio(_Request):
    data: str = Field(description="the encoded audio file, base64")
    format: str = Field(description=f"one of {list(AUDIO_FORMATS)}; others are refused with 415")


class TextPart(_Request):
    type: Literal["text"]
    text: str


class InputAudioPart(_Request):
    type: Literal["input_audio"]
    input_audio: InputAudio


class AudioURL(_Request):
    url: str = Field(description="data:audio/...;base64,... always; http(s):// and file:// only when the server "
                                 "config enables them (file:// inside local_audio_dir)")


class AudioURLPart(_Request):
    type: Literal["audio_url"]
    audio_url: AudioURL


ContentPart = Annotated[TextPart | InputAudioPart | AudioURLPart, Field(discriminator="type")]


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart]


class JSONSchemaSpec(_Request):
    name: str = "metadata"
    schema_: dict[str, Any] = Field(alias="schema", description="a JSON Schema object whose `properties` are fields "
                                                                "of the model's metadata schema (see /v1/schema)")
    strict: bool | None = None


class ResponseFormat(_Request):
    type: Literal["text", "json_object", "json_schema"] = Field(description="json_object: all metadata fields")
    json_schema: JSONSchemaSpec | None = None


class MetadataOptions(_Request):
    fields: list[str] | None = Field(None, description="metadata fields to answer, in this order (None: all)")


class StreamOptions(_Request):
    include_usage: bool = False


class ChatCompletionRequest(_Request):
    model: str | None = Field(None, description="a served model's id (see /v1/models; absent: the first model). "
                                                "A server of one model answers whatever id is sent")
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1, description="OpenAI's newer name for max_tokens")
    temperature: float | None = Field(None, ge=0, le=2, description="0 or absent: greedy decoding")
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    n: Literal[1] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    min_tokens: int | None = Field(None, ge=0, description="speechllm/vLLM extension: generate at least this many")
    speechllm: MetadataOptions | None = Field(
        None, description="speechllm extension: answer with schema-valid metadata JSON for these fields")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]


class MetadataExtension(BaseModel):
    """Metadata answers: the parsed values, a confidence per label/bool field, and whether the answer is complete.
    A label is null where SpeechActivity is false (no speech, no speaker) or below min_confidence (not sure)."""

    metadata: dict[str, Any]
    confidences: dict[str, float]
    valid: bool
    error: str | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    speechllm: MetadataExtension | None = None


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


# -- transcriptions and metadata --------------------------------------------------------------------------
class Transcription(BaseModel):
    text: str


class VerboseTranscription(BaseModel):
    task: Literal["transcribe"] = "transcribe"
    language: str = "english"
    duration: float
    text: str
    segments: list[dict] = Field(default_factory=list, description="always empty: no timestamps")


class MetadataRequest(_Request):
    """JSON form of /v1/metadata (multipart with `file` and `fields` works too)."""

    audio: str = Field(description="the encoded audio file, base64")
    format: str | None = Field(None, description=f"one of {list(AUDIO_FORMATS)}; absent: detected from the bytes")
    fields: list[str] | None = Field(None, description="metadata fields to answer, in this order (None: all)")
    model: str | None = Field(None, description="a served model's id (absent: the first model)")
    min_confidence: float | None = Field(None, ge=0, le=1, description="labels answered with a lower confidence "
                                         "come back null: not sure (absent: always answer)")


class MetadataResponse(MetadataExtension):
    model: str
    text: str = Field(description="the JSON text the model wrote")
    usage: Usage


# -- discovery ------------------------------------------------------------------------------------------
class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "speechllm"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class SchemaField(BaseModel):
    name: str
    kind: Literal["label", "text", "bool"]
    labels: list[str] = Field(default_factory=list)
    description: str = ""
    speaker: bool = Field(False, description="about a speaker: null (a label) or empty (text) when nobody speaks")


class SchemaResponse(BaseModel):
    fields: list[SchemaField]
    json_schema: dict[str, Any]


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    auth_required: bool
    # with an API key, only requests that send it see these (a bare liveness answer stays public)
    model: str | None = None
    busy: bool | None = None
    queued: int | None = None
