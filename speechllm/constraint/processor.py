"""The logits processor that lets each row write only a schema-valid metadata answer (see layout.py)."""

from __future__ import annotations

import math

import torch
import xgrammar as xgr
from transformers import LogitsProcessor

from speechllm.errors import InputError
from speechllm.metadata import SPEECH_FIELD, SPEECHLLM_SCHEMA, MetadataSchema, check_value

from .layout import _compiled, _Cursor, _layout_for, _OffLayout


class MetadataConstraint(LogitsProcessor):
    """A logits processor for `generate` that lets each batch row write exactly `serialize(values, names)` for
    some valid values, then eos. Pass `max_new_tokens=constraint.max_new_tokens` (None when a text field has no
    `max_chars`), or give the constraint the `budget` of tokens generate has (its max_new_tokens, e.g. what is left
    of a decoder's positions): then text values are cut and closed in time for every answer to end within it, so a
    transcript looping on a hallucination still gives valid JSON. Without either, a cut-off answer comes back from
    `decode_results` marked invalid.

    `forced` (one dict per row, or None) fixes some label or bool fields of a row to a given value, e.g. the
    decision of an attribute head; the LLM still writes it, so what follows is conditioned on it. A row may be
    given SpeechActivity even when it is not asked for: it still decides "no speech, no speaker" (speaker labels
    null, speaker texts empty; see metadata.speech_rule), which binds forced values too.

    Works with `input_ids` or `inputs_embeds` prompts and left padding; greedy or sampling, not beam search
    (beams reorder rows). It follows one generate call: the first call records the prompt length; build a new
    one per call (the compiled grammar is cached per tokenizer and schema, so that is cheap)."""

    def __init__(self, tokenizer, schema: MetadataSchema = SPEECHLLM_SCHEMA, names=None, forced=None,
                 budget: int | None = None):
        self.tokenizer, self.schema = tokenizer, schema.subset(names)
        self.forced, self.budget = forced, budget
        for row in forced or []:
            for name, value in row.items():
                field = (self.schema if name != SPEECH_FIELD else schema).field(name)
                if field.kind == "text":
                    raise InputError(f"MetadataConstraint: {name} is free text; only label and bool fields can be "
                                     "forced")
                check_value(field, value)
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
