"""What a constrained answer decodes to: values, per-label confidences, and why an answer is invalid."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from speechllm.metadata import SPEECHLLM_SCHEMA, MetadataSchema

from .layout import _Cursor, _layout_for, _OffLayout


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
