"""Constrained decoding of metadata answers: a logits processor that lets the model write only what
`metadata.serialize` writes (schema-valid JSON, the training targets' exact tokens), and the decoding of what it wrote
into values with per-label confidences.

An answer is a row of chunks cut at its spaces: `{"Gender":`, ` "Male",`, ` "Transcript":`, ` "hi there"}`. Every
chunk but a text value comes from a small set, and may only be written with the tokens the tokenizer itself gives it
("canonical" tokens, as in training targets): a trie per chunk does that. xgrammar checks the characters of text
values (and, as a second line of defence, everything else).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import weakref
from collections import defaultdict
from dataclasses import dataclass

import torch
import xgrammar as xgr
from transformers import LogitsProcessor

from speechllm.errors import ConfigError, InputError
from speechllm.metadata import SEPARATORS, SPEECHLLM_SCHEMA, Field, MetadataSchema, check_value

# A JSON string's rest, as json.dumps(ensure_ascii=False) writes it (no lone surrogates: not valid UTF-8). Written
# right-recursive, which xgrammar precomputes: `char*` or `char{0,n}` cost 40-90 ms a step on a 51k vocabulary.
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
            body = " | ".join(lit(json.dumps(x, ensure_ascii=False)) for x in f.choices)
        rules.append(f"v{i} ::= {body}")
    return "\n".join(rules + [_STRING])


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
    grammars: dict = dataclasses.field(default_factory=dict)  # model vocab size -> xgr.CompiledGrammar


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
                            " " + json.dumps(x, ensure_ascii=False) + close)[0]: x for x in f.choices}
        chunks.append(_Chunk(f, True, close.encode(), paths))
        bound.append(max(map(len, paths)))
        least.append(max(map(len, paths)))
    rest = [1 + sum(least[i + 1:]) for i in range(len(least))]
    layout = _Layout(chunks, vocab_bytes, torch.tensor([len(b) for b in vocab_bytes]),
                     torch.tensor([b.startswith(b'"') for b in vocab_bytes]), tokenizer.eos_token_id,
                     _ebnf(schema.fields, lead), None if None in bound else sum(bound), rest)
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
        if chunk.trie is not None:
            if chunk.is_value and chunk.field.name in self.forced:
                path = chunk.path_of(self.forced[chunk.field.name])
                return torch.tensor([path[len(self.path)]])
            return chunk.trie[self.path]
        if self.closed:
            return None
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


class MetadataConstraint(LogitsProcessor):
    """A logits processor for `generate` that lets each batch row write exactly `serialize(values, names)` for
    some valid values, then eos. Pass `max_new_tokens=constraint.max_new_tokens` (None when a text field has no
    `max_chars`), or give the constraint the `budget` of tokens generate has (its max_new_tokens, e.g. what is left
    of a decoder's positions): then text values are cut and closed in time for every answer to end within it, so a
    transcript looping on a hallucination still gives valid JSON. Without either, a cut-off answer comes back from
    `decode_results` marked invalid.

    `forced` (one dict per row, or None) fixes some label or bool fields of a row to a given value, e.g. the
    decision of an attribute head; the LLM still writes it, so what follows is conditioned on it.

    Works with `input_ids` or `inputs_embeds` prompts and left padding; greedy or sampling, not beam search
    (beams reorder rows). It follows one generate call: the first call records the prompt length; build a new
    one per call (the compiled grammar is cached per tokenizer and schema, so that is cheap)."""

    def __init__(self, tokenizer, schema: MetadataSchema = SPEECHLLM_SCHEMA, names=None, forced=None,
                 budget: int | None = None):
        self.tokenizer, self.schema = tokenizer, schema.subset(names)
        self.forced, self.budget = forced, budget
        for row in forced or []:
            for name, value in row.items():
                if self.schema.field(name).kind == "text":
                    raise InputError(f"MetadataConstraint: {name} is free text; only label and bool fields can be forced")
                check_value(self.schema.field(name), value)
        self.names = self.schema.names
        self._layout = _layout_for(tokenizer, self.schema)
        self.max_new_tokens = self._layout.max_new_tokens
        self._ids = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        lay, batch = self._layout, input_ids.shape[0]
        if self._ids is None:
            grammar = _compiled(self.tokenizer, lay, scores.shape[-1])
            self._matchers = [xgr.GrammarMatcher(grammar) for _ in range(batch)]
            if self.forced is not None and len(self.forced) != batch:
                raise InputError(f"MetadataConstraint: forced values for {len(self.forced)} rows, batch has {batch}")
            self._cursors = [_Cursor(lay, self.forced[r] if self.forced else None, self.budget) for r in range(batch)]
            self._bitmask = xgr.allocate_token_bitmask(batch, scores.shape[-1])
        else:
            if input_ids.shape[1] != self._ids.shape[1] + 1 or not torch.equal(input_ids[:, :-1], self._ids):
                raise InputError("MetadataConstraint follows one generate call with greedy or sampling decoding; "
                                 "build a new one per call (beam search reorders rows and is not supported)")
            for r, token in enumerate(input_ids[:, -1].tolist()):
                self._accept(r, token)
        self._ids = input_ids
        grammar_rows, only = [], {}  # rows the grammar masks; rows kept to a token list (after the grammar)
        for r, (matcher, cursor) in enumerate(zip(self._matchers, self._cursors)):
            if matcher.is_terminated():
                only[r] = torch.tensor([lay.eos])  # a finished row: generate pads it, whatever it draws
                continue
            if cursor.chunk is None or cursor.chunk.trie is None:  # a trie chunk needs no grammar: a trie is tighter
                matcher.fill_next_token_bitmask(self._bitmask, r)
                grammar_rows.append(r)
            allowed = cursor.allowed()
            if allowed is not None:
                only[r] = allowed
        if grammar_rows:
            xgr.apply_token_bitmask_inplace(scores, self._bitmask.to(scores.device), indices=grammar_rows)
        for r, allowed in only.items():
            allowed = allowed.to(scores.device)
            kept = scores[r, allowed]
            scores[r] = -math.inf
            scores[r, allowed] = kept
        return scores

    def _accept(self, r: int, token: int) -> None:
        matcher = self._matchers[r]
        if matcher.is_terminated():
            return
        if not matcher.accept_token(token):
            raise InputError(f"row {r}: token {token} breaks the metadata grammar; another logits processor or a "
                             f"forced token overrode MetadataConstraint")
        if token != self._layout.eos:
            try:
                self._cursors[r].advance(token)
            except _OffLayout as e:
                raise InputError(f"row {r}: {e}; this tokenizer does not split at the spaces of the JSON "
                                 f"layout") from None


@dataclass
class MetadataResult:
    """One decoded answer. `confidences`: per label or bool field, the probability of the chosen value under
    the distribution generate drew from. `valid` is False, with `error` saying why, when the answer is
    incomplete; `values` then holds the fields completed before the cut."""

    values: dict
    confidences: dict[str, float]
    text: str
    valid: bool
    error: str | None = None


def decode_results(sequences: torch.Tensor, scores, tokenizer, schema: MetadataSchema = SPEECHLLM_SCHEMA,
                   names=None) -> list[MetadataResult]:
    """Results of `generate(..., logits_processor=[MetadataConstraint(...)], output_scores=True,
    return_dict_in_generate=True)`: pass its `sequences` and `scores` (the processed scores, one (batch, vocab)
    tensor per new token). The last len(scores) columns of `sequences` are the new tokens.

    A label's confidence is the product, over its value's tokens, of their softmax probabilities: exact, since
    the constraint allows one token path per label (labels sharing leading tokens included), so the
    confidences of all labels of a field sum to 1."""
    sub = schema.subset(names)
    layout = _layout_for(tokenizer, sub)
    steps = len(scores)
    new = sequences[:, sequences.shape[1] - steps:].cpu()

    def logp(r: int, k: int) -> float:  # log softmax of row r's scores at step k, at the token taken
        row = scores[k][r].float()
        return (row[new[r, k]] - torch.logsumexp(row, -1)).item()

    results = []
    for r, tokens in enumerate(new.tolist()):
        end = tokens.index(layout.eos) if layout.eos in tokens else len(tokens)
        cursor, error = _Cursor(layout), None
        try:
            for token in tokens[:end]:
                cursor.advance(token)
        except _OffLayout as e:
            error = f"the tokens do not follow the constrained layout ({e}); was MetadataConstraint used?"
        if error is None and cursor.chunk is not None:
            hint = (f"; generate with max_new_tokens={layout.max_new_tokens} (MetadataConstraint.max_new_tokens)"
                    if layout.max_new_tokens else "; raise max_new_tokens, or give text fields max_chars so that "
                    "MetadataConstraint.max_new_tokens can size it")
            error = f"the answer stops inside {cursor.chunk.field.name!r} after {end} new tokens"
            error += hint if end == steps else ""
        # lstrip: the whitespace some tokenizers put at the start of a text is no part of the JSON
        text = b"".join(layout.vocab_bytes[t] for t in tokens[:end]).decode("utf-8", errors="replace").lstrip()
        confidences = {f.name: math.exp(sum(logp(r, k) for k in range(*cursor.steps[f.name])))
                       for f in sub.fields if f.kind != "text" and f.name in cursor.values}
        results.append(MetadataResult(cursor.values, confidences, text, error is None, error))
    return results
