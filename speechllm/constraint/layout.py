"""How a metadata answer is laid out in tokens: chunks cut at the answer's spaces, the canonical tokens of each chunk,
the xgrammar grammar of text values, and a cursor that follows one row's tokens through the layout."""

from __future__ import annotations

import dataclasses
import itertools
import json
import weakref
from collections import defaultdict
from dataclasses import dataclass

import torch
import xgrammar as xgr

from speechllm.errors import ConfigError, InputError
from speechllm.metadata import SEPARATORS, Field, MetadataSchema, check_value, speech_rule

_STRING = (r'string ::= "\"" | char string' "\n"
           r'char ::= [^\0-\x1f"\\\uD800-\uDFFF] | "\\" [\"\\bfnrt] | "\\u00" ("0" [0-7bef] | "1" [0-9a-f])')


def _ebnf(fields: tuple[Field, ...], lead: str) -> str:
    """A grammar of exactly the strings `serialize` writes for `fields`, after `lead` (the whitespace some
    tokenizers, SentencePiece's among them, put at the start of a text)."""
    lit = json.dumps  # an EBNF string literal uses JSON's escapes
    heads = [lit((lead + "{" if i == 0 else SEPARATORS[0]) + json.dumps(f.name) + SEPARATORS[1]) + f" v{i}"
             for i, f in enumerate(fields)]
    rules = [f"root ::= {' '.join(heads)} {lit('}')}"]
    for i, f in enumerate(fields):
        if f.kind == "text":
            body = '"\\"" string'  # max_chars is enforced by _Cursor, not here (see _STRING)
        else:
            body = " | ".join(lit(json.dumps(x, ensure_ascii=False)) for x in _written_values(f))
        rules.append(f"v{i} ::= {body}")
    return "\n".join(rules + [_STRING])


def _written_values(f: Field) -> tuple:
    """The values decoding may write for a label or bool field: its choices, and null for a speaker label."""
    return (*f.choices, None) if f.speaker and f.kind == "label" else f.choices


@dataclass
class _Chunk:
    """One chunk of the answer: a key, or the value of `field`. `paths` maps the canonical tokens of each way to
    write it to the value written (None for a key); `trie` maps a token prefix to the tokens that may follow.
    Both are None for a text value, which ends at its closing quote and the `close` byte after it."""

    field: Field
    is_value: bool
    close: bytes
    paths: dict | None
    trie: dict | None = None

    def __post_init__(self):
        if self.paths is not None:
            children = defaultdict(set)
            for path in self.paths:
                for j in range(len(path)):
                    children[path[:j]].add(path[j])
            self.trie = {p: torch.tensor(sorted(s)) for p, s in children.items()}

    def next_tokens(self, prefix: tuple, values) -> torch.Tensor:
        """The tokens that may follow `prefix` on the way to writing one of `values`."""
        return torch.tensor(sorted({path[len(prefix)] for path, written in self.paths.items()
                                    if path[:len(prefix)] == prefix and len(path) > len(prefix)
                                    and any(written == v and type(written) is type(v) for v in values)}))

    def path_of(self, value) -> tuple[int, ...]:
        """The tokens that write `value` (a label or bool of this chunk's field)."""
        for path, written in self.paths.items():
            if written == value and type(written) is type(value):
                return path
        raise InputError(f"{value!r} is not a value of metadata field {self.field.name!r}")


@dataclass
class _Layout:
    """What is fixed for one (tokenizer, fields): the chunks, the bytes of each token, the grammar."""

    chunks: list[_Chunk]
    vocab_bytes: list[bytes]
    token_len: torch.Tensor  # bytes per token
    quote_first: torch.Tensor  # whether a token starts with '"'
    eos: int
    ebnf: str
    max_new_tokens: int | None
    rest_tokens: list[int]  # per chunk: tokens that always suffice to write every later chunk, then eos
    schema: MetadataSchema
    grammars: dict = dataclasses.field(default_factory=dict)  # model vocab size -> xgr.CompiledGrammar
    empty_text: dict = dataclasses.field(default_factory=dict)  # (close, bytes written) -> tokens that go on ` ""`

    def empty_text_tokens(self, close: bytes, written: bytes) -> torch.Tensor:
        """The tokens that continue `written` towards an empty text value (` ""` then `close`), nothing more."""
        key = (close, written)
        if key not in self.empty_text:
            target = b' ""' + close
            self.empty_text[key] = torch.tensor([i for i, piece in enumerate(self.vocab_bytes)
                                                 if piece and target.startswith(written + piece)])
        return self.empty_text[key]


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> {key: _Layout | xgr objects}


def _tokenizer_info(tokenizer, vocab_size: int):
    """xgrammar's view of the vocabulary, with special tokens (pad, audio placeholders, ...) blanked: xgrammar
    would otherwise treat `<pad>` as the text "<pad>" and allow it inside a transcript."""
    per_tok = _CACHE.setdefault(tokenizer, {})
    if ("info", vocab_size) not in per_tok:
        base = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
        special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
        vocab = [""] * vocab_size  # xgrammar never allows an empty token, except as a stop token
        for token, i in tokenizer.get_vocab().items():
            if i < vocab_size and i not in special:
                vocab[i] = token
        per_tok[("info", vocab_size)] = xgr.TokenizerInfo(vocab, base.vocab_type, vocab_size=vocab_size,
                                                          stop_token_ids=[tokenizer.eos_token_id],
                                                          add_prefix_space=base.add_prefix_space)
    return per_tok[("info", vocab_size)]


def _canonical(tokenizer, vocab_bytes, context: str, chunk: str) -> tuple[tuple[int, ...], bytes]:
    """The tokens the tokenizer gives `chunk` after `context` (after nothing: at the start of a text, as the
    answer of a training target is encoded), and the bytes they spell: `chunk`, after the whitespace a
    tokenizer may add at the start of a text."""
    ids = tokenizer.encode(context + chunk, add_special_tokens=False)
    pieces = [vocab_bytes[i] for i in ids]
    offsets, spelled, target = list(itertools.accumulate(map(len, pieces), initial=0)), b"".join(pieces), chunk.encode()
    cut = len(spelled) - len(target) if context else 0
    if not spelled.endswith(target) or cut not in offsets or spelled[cut:len(spelled) - len(target)].strip():
        raise ConfigError(f"this tokenizer writes {chunk!r} with tokens that cross the spaces of the JSON layout; "
                          f"constrained metadata decoding needs token boundaries there")
    return tuple(ids[offsets.index(cut):]), spelled[cut:]


# Tokens that always suffice to write a text value closed as soon as it may be: its opening ` "` (2), the rest of a
# character begun (`\u00XX` after its backslash: 5 bytes, a token has at least one), the closing quote and the
# comma or brace after it (2).
_TEXT_CLOSING = 9


def _layout_for(tokenizer, schema: MetadataSchema) -> _Layout:
    per_tok = _CACHE.setdefault(tokenizer, {})
    key = json.dumps(schema.to_config())
    if key in per_tok:
        return per_tok[key]
    if tokenizer.eos_token_id is None:
        raise ConfigError("constrained metadata decoding needs a tokenizer with an eos token")
    vocab_bytes = _tokenizer_info(tokenizer, len(tokenizer)).decoded_vocab
    chunks, bound, lead = [], [1], ""  # bound: worst-case tokens per chunk (a token has >= 1 byte); 1 for eos
    least = []  # per chunk: tokens that always suffice for it, a text value closed as soon as it may be
    for i, f in enumerate(schema.fields):
        close = "}" if i == len(schema.fields) - 1 else ","
        key_text = ("{" if i == 0 else " ") + json.dumps(f.name) + ":"
        tokens, spelled = _canonical(tokenizer, vocab_bytes, "" if i == 0 else ",", key_text)
        lead = spelled[:len(spelled) - len(key_text.encode())].decode() if i == 0 else lead
        chunks.append(_Chunk(f, False, b"", {tokens: None}))
        bound.append(len(tokens))
        least.append(len(tokens))
        if f.kind == "text":
            chunks.append(_Chunk(f, True, close.encode(), None))
            bound.append(None if f.max_chars is None else 4 + 6 * f.max_chars)  # a char is at most 6 bytes (\u00XX)
            least.append(_TEXT_CLOSING)
            continue
        paths = {_canonical(tokenizer, vocab_bytes, json.dumps(f.name) + ":",
                            " " + json.dumps(x, ensure_ascii=False) + close)[0]: x for x in _written_values(f)}
        chunks.append(_Chunk(f, True, close.encode(), paths))
        bound.append(max(map(len, paths)))
        least.append(max(map(len, paths)))
    rest = [1 + sum(least[i + 1:]) for i in range(len(least))]
    layout = _Layout(chunks, vocab_bytes, torch.tensor([len(b) for b in vocab_bytes]),
                     torch.tensor([b.startswith(b'"') for b in vocab_bytes]), tokenizer.eos_token_id,
                     _ebnf(schema.fields, lead), None if None in bound else sum(bound), rest, schema)
    per_tok[key] = layout
    return layout


def _compiled(tokenizer, layout: _Layout, vocab_size: int):
    """The grammar compiled for a model whose logits have `vocab_size` columns (cached: compiling costs time)."""
    if vocab_size not in layout.grammars:
        per_tok = _CACHE[tokenizer]
        if ("compiler", vocab_size) not in per_tok:
            per_tok[("compiler", vocab_size)] = xgr.GrammarCompiler(_tokenizer_info(tokenizer, vocab_size),
                                                                    max_threads=1)
        layout.grammars[vocab_size] = per_tok[("compiler", vocab_size)].compile_grammar(layout.ebnf)
    return layout.grammars[vocab_size]


class _OffLayout(Exception):
    pass


class _Cursor:
    """Follows one row's tokens chunk by chunk. Knows which tokens may come next in a trie chunk, and records
    each value with the steps (token positions) that wrote it."""

    def __init__(self, layout: _Layout, forced: dict | None = None, budget: int | None = None):
        self.layout, self.index, self.path, self.buf = layout, 0, (), b""
        self.forced = forced or {}  # field -> the one value this row may write
        self.budget = budget  # the tokens this row may write in all, eos included; None: no limit
        self.step = self.start = 0
        self._text_state()
        self.values, self.steps = {}, {}

    def _text_state(self) -> None:
        # inside a text value: characters so far (counted at their first byte), and the bytes still owed to the
        # current one: after a backslash, hex digits of \u00XX, UTF-8 continuation bytes
        self.chars, self.escaped, self.hex, self.cont, self.closed = 0, False, 0, 0, False

    @property
    def chunk(self) -> _Chunk | None:
        return self.layout.chunks[self.index] if self.index < len(self.layout.chunks) else None

    def allowed(self):
        """The tokens allowed next (a LongTensor), on top of the grammar; None where the grammar alone decides."""
        chunk, lay = self.chunk, self.layout
        if chunk is None:
            return None
        # No speech, no speaker: what this field may take after the values of the row so far (metadata.speech_rule)
        rule = speech_rule(chunk.field, {**self.forced, **self.values}, lay.schema) if chunk.is_value else None
        if chunk.trie is not None:
            name = chunk.field.name
            if chunk.is_value and name in self.forced and (rule is None or self.forced[name] in rule):
                path = chunk.path_of(self.forced[name])
                return torch.tensor([path[len(self.path)]])
            if rule is not None:
                return chunk.next_tokens(self.path, rule)
            return chunk.trie[self.path]
        if self.closed:
            return None
        if rule == "":
            return lay.empty_text_tokens(chunk.close, self.buf)
        pending = self.escaped or self.hex or self.cont  # bytes owed to a character begun
        if self.budget is not None and len(self.buf) >= 2:
            # Out of tokens soon (a transcript looping on a hallucination): finish the character begun byte by
            # byte, then close the text, leaving what the later fields and eos need.
            left = self.budget - self.step - lay.rest_tokens[self.index]
            if left <= _TEXT_CLOSING - 2:
                return (lay.token_len == 1).nonzero().squeeze(1) if pending else lay.quote_first.nonzero().squeeze(1)
        if chunk.field.max_chars is None:
            return None
        # A token adds at most one character per byte, beyond the bytes owed to the current character and the
        # opening ` "`; a token starting with the closing quote adds none.
        room = chunk.field.max_chars - self.chars + self.escaped + self.hex + self.cont + max(0, 2 - len(self.buf))
        if room >= int(lay.token_len.max()):
            return None
        ok = lay.token_len <= room
        if len(self.buf) >= 2 and not pending:
            ok |= lay.quote_first
        return ok.nonzero().squeeze(1)

    def advance(self, token: int) -> None:
        chunk = self.chunk
        if chunk is None:
            raise _OffLayout(f"token {token} after the closing brace")
        self.step += 1
        if chunk.paths is not None:
            self.path += (token,)
            if self.path in chunk.paths:
                self._finish(chunk.paths[self.path])
            elif self.path not in chunk.trie:
                spelled = b"".join(self.layout.vocab_bytes[t] for t in self.path).decode(errors="replace")
                raise _OffLayout(f"{spelled!r} is not how this tokenizer writes a {chunk.field.name} "
                                 f"{'value' if chunk.is_value else 'key'}")
            return
        piece = self.layout.vocab_bytes[token]  # a text value: ` "` + JSON string content + `"` + close
        self.buf += piece
        for i in range(len(self.buf) - len(piece), len(self.buf)):
            c = self.buf[i]
            if i < 2:
                if c != b' "'[i]:
                    raise _OffLayout(f"{chunk.field.name} must start with ' \"'")
            elif self.closed:
                if c != chunk.close[0] or i != len(self.buf) - 1:
                    raise _OffLayout(f"a token runs past the end of {chunk.field.name}")
                try:
                    self._finish(json.loads(self.buf[1:-1].decode()))
                except (UnicodeDecodeError, json.JSONDecodeError):
                    raise _OffLayout(f"{chunk.field.name} is not a valid JSON string") from None
            elif self.escaped:
                self.escaped, self.hex = False, 4 if c == b"u"[0] else 0
            elif self.hex:
                self.hex -= 1
            elif self.cont:
                self.cont -= 1
            elif c == b'"'[0]:
                self.closed = True
            else:
                self.chars += 1
                self.escaped = c == b"\\"[0]
                self.cont = 3 if c >= 0xF0 else 2 if c >= 0xE0 else 1 if c >= 0xC0 else 0

    def _finish(self, value) -> None:
        if self.chunk.is_value:
            try:
                self.values[self.chunk.field.name] = check_value(self.chunk.field, value)
            except InputError as e:
                raise _OffLayout(str(e)) from None
            self.steps[self.chunk.field.name] = (self.start, self.step)
        self.index, self.start, self.path, self.buf = self.index + 1, self.step, (), b""
        self._text_state()
