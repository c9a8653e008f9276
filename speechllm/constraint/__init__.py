"""Constrained decoding of metadata answers: a logits processor that lets the model write only what
`metadata.serialize` writes (schema-valid JSON, the training targets' exact tokens), and the decoding of what it wrote
into values with per-label confidences.

An answer is a row of chunks cut at its spaces: `{"Gender":`, ` "Male",`, ` "Transcript":`, ` "hi there"}`. Every
chunk but a text value comes from a small set, and may only be written with the tokens the tokenizer itself gives it
("canonical" tokens, as in training targets): a trie per chunk does that. xgrammar checks the characters of text
values (and, as a second line of defence, everything else).

Modules: `layout` (chunks, canonical tokens, the text grammar, the cursor), `processor` (MetadataConstraint),
`results` (MetadataResult, decode_results).
"""

from .processor import MetadataConstraint
from .results import MetadataResult, decode_results

__all__ = ["MetadataConstraint", "MetadataResult", "decode_results"]
