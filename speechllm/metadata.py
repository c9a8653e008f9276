"""The metadata schema of SpeechLLM (seed 000): fields, label sets, serialise, parse, validate.

The model answers with one JSON object in exactly the form `serialize` writes:

    {"SpeechActivity": true, "Transcript": "hi there", "Gender": "Male"}

that is `json.dumps(values, ensure_ascii=False, separators=(", ", ": "))`, keys in the requested order. Training
targets are written by `serialize`, and `constraint.MetadataConstraint` lets the model produce only that exact text
(same separators, same escapes), so constrained outputs and training targets are the same strings. Two more reasons for
this form: every label value is a whitespace-delimited chunk (` "Male",`), so common tokenizers (byte-level BPE,
SentencePiece) split it the same way whatever stands around it; and `MetadataConstraint` forces that one
tokenization of each label, which makes a label's confidence the plain product of its tokens' probabilities.

No speech, no speaker: fields marked `speaker` (Gender, Age, Accent, Emotion, Transcript) describe someone speaking.
When SpeechActivity is false they are null (a label field) or "" (a text field); `speech_rule` says what a field may
take given the values written before it, and the constrained decoding follows it. A label field may also be null
while SpeechActivity is true: "not sure", an answer below the caller's `min_confidence`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from speechllm.errors import ConfigError, InputError

SEPARATORS = (", ", ": ")
KINDS = ("label", "text", "bool")
SPEECH_FIELD = "SpeechActivity"  # the bool field that gates the speaker fields (see `speech_rule`)
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")  # keeps `[A, B]` instructions and JSON keys unambiguous


def _label_key(raw: str) -> str:
    """What `normalize_label` compares: case, spaces, '-' and '_' do not count."""
    return re.sub(r"[\s_-]+", "", raw).casefold()


@dataclass(frozen=True)
class Field:
    """One key of the answer: a closed label set, free text (optionally capped at `max_chars`), or a bool."""

    name: str
    kind: str
    labels: tuple[str, ...] = ()
    description: str = ""
    max_chars: int | None = None  # text only; bounds the grammar, so a caller can size max_new_tokens
    speaker: bool = False  # label or text: about a speaker, so null (label) or "" (text) when nobody speaks

    def __post_init__(self):
        where = f"metadata field {self.name!r}"
        if isinstance(self.labels, str):
            raise ConfigError(f"{where}: labels must be a list of strings, got {self.labels!r}")
        object.__setattr__(self, "labels", tuple(self.labels))
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ConfigError(f"{where}: a name is a letter then letters, digits, '_' or '-'")
        if self.kind not in KINDS:
            raise ConfigError(f"{where}: kind {self.kind!r} is not one of {list(KINDS)}")
        if (self.kind == "label") != bool(self.labels):
            raise ConfigError(f"{where}: a 'label' field needs labels and only a 'label' field may have them")
        if any(not isinstance(x, str) or not x.strip() or x != x.strip() for x in self.labels):
            raise ConfigError(f"{where}: labels must be non-empty strings without outer spaces, got {self.labels}")
        keys = [_label_key(x) for x in self.labels]
        if len(set(keys)) != len(keys):
            raise ConfigError(f"{where}: labels {self.labels} repeat up to case, spaces, '-' and '_'")
        if self.max_chars is not None and (self.kind != "text" or not isinstance(self.max_chars, int)
                                           or self.max_chars < 1):
            raise ConfigError(f"{where}: max_chars must be a positive int, and only on a 'text' field")
        if not isinstance(self.speaker, bool) or (self.speaker and self.kind == "bool"):
            raise ConfigError(f"{where}: speaker is true or false, and only on a 'label' or 'text' field")

    @property
    def choices(self) -> tuple:
        """The values a label or bool field can take, in a fixed order (none for free text)."""
        return self.labels if self.kind == "label" else (True, False) if self.kind == "bool" else ()

    def to_config(self) -> dict:
        """This field as a plain dict that `MetadataSchema.from_config` reads back."""
        out = {"name": self.name, "kind": self.kind}
        if self.labels:
            out["labels"] = list(self.labels)
        if self.description:
            out["description"] = self.description
        if self.max_chars is not None:
            out["max_chars"] = self.max_chars
        if self.speaker:
            out["speaker"] = True
        return out


@dataclass(frozen=True)
class MetadataSchema:
    """Ordered fields. Any subset of them, in any order, can be asked for."""

    fields: tuple[Field, ...]

    def __post_init__(self):
        object.__setattr__(self, "fields", tuple(self.fields))
        if not self.fields:
            raise ConfigError("a metadata schema needs at least one field")
        dup = sorted({n for n in self.names if self.names.count(n) > 1})
        if dup:
            raise ConfigError(f"metadata fields {dup} are defined more than once")

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    def __contains__(self, name) -> bool:
        return name in self.names

    def field(self, name: str) -> Field:
        """The field called `name`; ConfigError naming the valid ones if there is none."""
        for f in self.fields:
            if f.name == name:
                return f
        raise ConfigError(f"unknown metadata field {name!r}; valid fields are {self.names}")

    def subset(self, names=None) -> MetadataSchema:
        """The schema of `names` in that order (all fields when None)."""
        if names is None:
            return self
        if isinstance(names, str):
            raise ConfigError(f"pass field names as a list, e.g. [{names!r}], not a string")
        names = list(names)
        if len(set(names)) != len(names):
            raise ConfigError(f"metadata fields requested twice: {names}")
        return MetadataSchema(tuple(self.field(n) for n in names))

    def json_schema(self, names=None, *, not_sure: bool = False) -> dict:
        """A JSON Schema of the answer for `names`: properties in that order, all required, nothing else.
        No speech, no speaker: a speaker label may be null, and with SpeechActivity asked for, only when it is
        false, which also empties speaker texts. `not_sure` (answers with a min_confidence): any label may be
        null."""
        props, sub = {}, self.subset(names)
        for f in sub.fields:
            prop = {"label": {"type": "string", "enum": list(f.labels)}, "bool": {"type": "boolean"},
                    "text": {"type": "string"}}[f.kind]
            if f.kind == "label" and (f.speaker or not_sure):
                prop = {"type": ["string", "null"], "enum": [*f.labels, None]}
            if f.max_chars is not None:
                prop["maxLength"] = f.max_chars
            if f.description:
                prop["description"] = f.description
            props[f.name] = prop
        out = {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}
        speakers = [f for f in sub.fields if f.speaker]
        if SPEECH_FIELD in sub and speakers:
            out["if"] = {"properties": {SPEECH_FIELD: {"const": False}}}
            out["then"] = {"properties": {f.name: {"const": None} if f.kind == "label" else {"maxLength": 0}
                                          for f in speakers}}
            if not not_sure:
                out["else"] = {"properties": {f.name: {"type": "string"} for f in speakers if f.kind == "label"}}
        return out

    @classmethod
    def from_config(cls, config) -> MetadataSchema:
        """Build a schema from a list of fields or `{"fields": [...], "extend": {"Emotion": ["Calm"]}}`.

        A field is a dict (`name`, `kind`, and `labels` / `description` / `max_chars`) or the name of a field of
        SPEECHLLM_SCHEMA. Without "fields", all of SPEECHLLM_SCHEMA. "extend" appends labels to label fields.
        """
        if isinstance(config, MetadataSchema):
            return config
        if isinstance(config, (list, tuple)):
            config = {"fields": config}
        if not isinstance(config, dict):
            raise ConfigError(f"a metadata schema config is a list or a dict, got {type(config).__name__}")
        unknown = sorted(set(config) - {"fields", "extend"})
        if unknown:
            raise ConfigError(f"metadata schema: unknown key(s) {unknown}; valid keys are ['extend', 'fields']")
        fields = [_field_from_config(x) for x in config.get("fields", SPEECHLLM_SCHEMA.fields)]
        schema = cls(tuple(fields))
        for name, extra in (config.get("extend") or {}).items():
            f = schema.field(name)
            if f.kind != "label" or isinstance(extra, str):
                raise ConfigError(f"extend: {name!r} must be a label field and the labels a list, e.g. ['Calm']")
            fields = [Field(**{**x.__dict__, "labels": x.labels + tuple(extra)}) if x is f else x for x in fields]
            schema = cls(tuple(fields))
        return schema

    def to_config(self) -> dict:
        """The schema as a plain dict; `from_config(to_config())` equals it."""
        return {"fields": [f.to_config() for f in self.fields]}


def _field_from_config(item) -> Field:
    if isinstance(item, Field):
        return item
    if isinstance(item, str):
        return SPEECHLLM_SCHEMA.field(item)
    if not isinstance(item, dict):
        raise ConfigError(f"a metadata field is a dict or a field name, got {item!r}")
    unknown = sorted(set(item) - {"name", "kind", "labels", "description", "max_chars", "speaker"})
    if unknown or "name" not in item or "kind" not in item:
        raise ConfigError(f"metadata field {item!r}: needs 'name' and 'kind'; unknown key(s) {unknown}")
    return Field(**item)


SPEECHLLM_SCHEMA = MetadataSchema((
    Field("SpeechActivity", "bool", description="whether anyone speaks"),
    # Capped so the answer always fits a known token budget (about two minutes of speech); raise it by config.
    Field("Transcript", "text", description="what is said", max_chars=2000, speaker=True),
    Field("Gender", "label", ("Female", "Male"), speaker=True),
    Field("Age", "label", ("Young", "Middle-Age", "Senior"), speaker=True),
    Field("Accent", "label", ("Africa", "America", "Celtic", "Europe", "Oceania", "South-Asia", "South-East-Asia"),
          speaker=True),
    Field("Emotion", "label", ("Happy", "Sad", "Anger", "Neutral", "Frustrated"), speaker=True),
))


def normalize_label(name: str, raw, schema: MetadataSchema = SPEECHLLM_SCHEMA):
    """The schema's value for a corpus spelling: "female" -> "Female", "middle age" -> "Middle-Age",
    "True"/"yes"/1 -> True for bool fields. None when there is no counterpart."""
    f = schema.field(name)
    if f.kind == "text":
        raise ConfigError(f"{name!r} is a text field; it has no labels to normalize to")
    if f.kind == "bool":
        if isinstance(raw, bool):
            return raw
        return {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}.get(
            str(raw).strip().casefold())
    if not isinstance(raw, str):
        return None
    return {_label_key(x): x for x in f.labels}.get(_label_key(raw))


def check_value(f: Field, value):
    """`value` if it is a valid value of `f`, else InputError naming the field, the value and what is allowed.
    A label field may be None (no speaker, or not sure)."""
    if f.kind == "label" and value is not None and not (isinstance(value, str) and value in f.labels):
        raise InputError(f"{f.name}={value!r} is not one of {list(f.labels)}; normalize_label() maps case and "
                         f"spacing variants")
    if f.kind == "bool" and not isinstance(value, bool):
        raise InputError(f"{f.name}={value!r} must be true or false (a bool); normalize_label() maps 'True'/'yes'")
    if f.kind == "text":
        if not isinstance(value, str):
            raise InputError(f"{f.name}={value!r} must be a string")
        if f.max_chars is not None and len(value) > f.max_chars:
            raise InputError(f"{f.name} has {len(value)} characters; the schema allows at most {f.max_chars}")
    return value


def serialize(values: dict, names=None, schema: MetadataSchema = SPEECHLLM_SCHEMA) -> str:
    """The JSON answer for `values` with keys `names` in that order (when None: the keys of `values`, in schema
    order; fields a corpus lacks are simply left out). Keys of `values` not in `names` are ignored."""
    if names is None:
        unknown = [k for k in values if k not in schema]
        if unknown:
            raise InputError(f"unknown metadata field(s) {unknown}; valid fields are {schema.names}")
        names = [n for n in schema.names if n in values]
    fields = schema.subset(names).fields
    missing = [f.name for f in fields if f.name not in values]
    if missing:
        raise InputError(f"no value for requested metadata field(s) {missing}")
    checked = {f.name: check_value(f, values[f.name]) for f in fields}
    return json.dumps(checked, ensure_ascii=False, separators=SEPARATORS)


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise InputError(f"metadata JSON repeats a key: {keys}")
    return dict(pairs)


def parse(text: str, names=None, schema: MetadataSchema = SPEECHLLM_SCHEMA) -> dict:
    """Typed values (bool for bool fields) from a JSON answer, in `names` order. Strict: no repair; the keys must
    be exactly `names` (when None: any known fields); InputError says what is wrong."""
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as e:
        raise InputError(f"metadata answer is not valid JSON ({e}): {text[:120]!r}") from None
    if not isinstance(obj, dict):
        raise InputError(f"metadata answer must be a JSON object, got {text[:120]!r}")
    if names is None:
        unknown = [k for k in obj if k not in schema]
        if unknown:
            raise InputError(f"unknown metadata field(s) {unknown}; valid fields are {schema.names}")
        names = [n for n in schema.names if n in obj]
    fields = schema.subset(names).fields
    missing, extra = [f.name for f in fields if f.name not in obj], [k for k in obj if k not in names]
    if missing or extra:
        raise InputError(f"metadata answer has missing key(s) {missing} and unexpected key(s) {extra}: {text[:120]!r}")
    return {f.name: check_value(f, obj[f.name]) for f in fields}


def speech_known(values: dict, schema: MetadataSchema | None = None) -> bool | None:
    """Whether someone speaks, as far as the values written so far of one answer tell (during decoding, where a
    null speaker label means "no speaker"): SpeechActivity itself; else False after a null speaker label, True
    after a speaker label or a non-empty speaker text; else None (not known yet)."""
    schema = schema or SPEECHLLM_SCHEMA
    if isinstance(values.get(SPEECH_FIELD), bool):
        return values[SPEECH_FIELD]
    for name, value in values.items():
        if name in schema and schema.field(name).speaker:
            if schema.field(name).kind == "label":
                return value is not None
            if value:
                return True
    return None


def speech_rule(f: Field, known: dict, schema: MetadataSchema):
    """What field `f` may take after the values `known` of an answer for the fields of `schema`, under "no
    speech, no speaker": a tuple of the allowed values of a label or bool field (None: null), "" when a text field
    must be empty, or None when the rule leaves the field free (its own checks still apply). A speaker label is
    null only where SpeechActivity is false, or may still turn out false later in the same answer."""
    speech = speech_known(known, schema)
    if f.name == SPEECH_FIELD:
        return None if speech is None else (speech,)
    if not f.speaker:
        return None
    if f.kind == "text":
        return "" if speech is False else None
    if speech is None:
        return (*f.labels, None) if SPEECH_FIELD in schema else f.labels
    return (None,) if speech is False else f.labels
