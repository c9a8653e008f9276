"""Self-generated targets: the text LLM answers instructions about each transcript (seeds 002 and 004).

In: a JSONL manifest with `audio` and `transcript` per row. For each row a few instruction templates are picked
(deterministically from the seed and the row index), the text LLM answers `template(transcript)` greedily, and
answers that pass the filters become training rows:

    {"audio", "transcript", "instruction", "response", "ends_with_eos": true, "task": "instruction",
     "family", "source_line", ...the row's other keys}

`instruction` is the template without the transcript: the speech model is asked it with the audio in the
transcript's place. `response` holds no EOS string; `ends_with_eos` says the LLM ended it with EOS, which the
training chat template appends (seed 002 trained without it and its outputs repeat).

Out: the JSONL manifest, appended and flushed per batch, plus `<out>.meta.json` (settings, finished or not).
Rerunning resumes: a cut-off last line is truncated, finished batches are skipped, and the output is the same,
byte for byte, as an uninterrupted run. Generation batches are fixed blocks of `batch_size` rows, and a shard
takes whole blocks (block b goes to shard b % n), so every batch is padded alike whatever the sharding or
resuming, and `target_runs.merge_shards` rebuilds the unsharded output exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
import unicodedata
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable, Iterator

import torch

from ..errors import ConfigError, DataError
from ..model_files import reading_model
from ..models.processing import FALLBACK_CHAT_TEMPLATE
from ..records import BadRow, JsonLine, read_jsonl, row_segment
from .target_runs import auto_shard, count_done, meta_path, read_meta, recover_output, shard_path, write_meta

FAMILIES = ("repeat", "paraphrase", "keywords", "intent", "sentiment", "continuation", "translation", "answer")
SLOT = "{transcript}"
# Some chat templates (Llama 3.x) print today's date unless given one; a fixed date keeps prompts reproducible.
FIXED_DATE = "26 Jul 2024"

# generate_fn(model, input_ids, attention_mask, max_new_tokens, stop_ids) -> new token ids (batch, <= max_new)
GenerateFn = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, int, list[int]], torch.Tensor]


def load_templates(families=FAMILIES) -> dict[str, list[str]]:
    """The instruction templates of each family, from `speechllm/resources/target_templates/<family>.txt`."""
    folder = resources.files("speechllm").joinpath("resources", "target_templates")
    templates = {}
    for family in families:
        source = folder.joinpath(f"{family}.txt")
        if not source.is_file():
            known = sorted(p.name[:-4] for p in folder.iterdir() if p.name.endswith(".txt"))
            raise ConfigError(f"unknown target family {family!r}; known families: {', '.join(known)}")
        lines = [line.strip() for line in source.read_text(encoding="utf-8").splitlines()]
        templates[family] = [line for line in lines if line and not line.startswith("#")]
        for line in templates[family]:
            if not line.endswith(SLOT) or line.count(SLOT) != 1:
                raise ConfigError(f"{family}.txt: every template must end with {SLOT}, got {line!r}")
    return templates


def pick_templates(templates: dict[str, list[str]], index: int, seed: int, count: int) -> list[tuple[str, int]]:
    """`count` distinct (family, template number) pairs for row `index`: families in a shuffled round robin."""
    digest = hashlib.sha256(f"{seed}:{index}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    order = rng.sample(list(templates), len(templates))
    shuffled = {family: rng.sample(range(len(templates[family])), len(templates[family])) for family in order}
    rounds = max(len(numbers) for numbers in shuffled.values())
    picks = [(f, shuffled[f][r]) for r in range(rounds) for f in order if r < len(shuffled[f])]
    return picks[:count]


def build_prompt(tokenizer, user_text: str) -> list[int]:
    """Token ids of a one-turn chat ending where the assistant's answer begins (the tokenizer's template or
    the plain `### User:` / `### Assistant:` fallback)."""
    template = None if getattr(tokenizer, "chat_template", None) else FALLBACK_CHAT_TEMPLATE
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": user_text}], chat_template=template, tokenize=False,
        add_generation_prompt=True, date_string=FIXED_DATE,
    )
    return tokenizer(text, add_special_tokens=False).input_ids


def greedy_generate(model, input_ids, attention_mask, max_new_tokens: int, stop_ids: list[int]) -> torch.Tensor:
    """Greedy continuation of a left-padded batch with Hugging Face `generate`; returns only the new tokens."""
    from transformers import GenerationConfig

    config = GenerationConfig(
        do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=stop_ids, pad_token_id=stop_ids[0]
    )
    with torch.inference_mode():
        out = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
    return out[:, input_ids.shape[1]:]


def ends_in_punctuation(text: str) -> bool:
    """True when the last character is closing punctuation (. ! ? ; : quotes, brackets, 。 and the like)."""
    return bool(text) and unicodedata.category(text[-1]) in ("Po", "Pe", "Pf")


@dataclass
class TargetStats:
    """What one `generate_targets` call did: rows kept, drops by reason, speed."""

    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    already_done: int = 0  # samples skipped because a previous run wrote them
    records: int = 0  # manifest rows this shard handled
    generated_tokens: int = 0
    generation_seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.generated_tokens / self.generation_seconds if self.generation_seconds else 0.0

    def drop(self, reason: str, count: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + count

    def to_dict(self) -> dict:
        return {**asdict(self), "tokens_per_second": self.tokens_per_second}


@dataclass
class _Sample:
    row: dict
    source_line: int
    family: str
    template: str

    @property
    def key(self) -> tuple:
        return self.source_line, self.family, self.instruction

    @property
    def instruction(self) -> str:
        return self.template[: -len(SLOT)].strip()

    def prompt(self) -> str:
        return self.template[: -len(SLOT)] + self.row["transcript"]


def generate_targets(
    manifest_in,
    out_path,
    *,
    llm,
    families=FAMILIES,
    templates_per_record: int = 1,
    batch_size: int = 16,
    max_new_tokens: int = 256,
    min_tokens: int = 6,
    max_tokens: int = 2047,
    require_final_punctuation: bool = True,
    seed: int = 0,
    shard: tuple[int, int] | None = None,
    resume: bool = True,
    dtype="auto",
    device="auto",
    generate_fn: GenerateFn | None = None,
) -> TargetStats:
    """Write the text LLM's filtered greedy answers for every row of `manifest_in` to `out_path` (JSONL).

    `llm` is a hub name or local path (loaded with `dtype` on `device`), or a `(model, tokenizer)` pair used as
    it is. `batch_size` rows form one
    generation batch (times `templates_per_record` samples). `shard=(k, n)` writes `shard_path(out_path, k, n)`;
    when left out and launched with several processes (`accelerate launch`), each process takes its own shard.
    `generate_fn` replaces `greedy_generate` (tests, other backends). Returns the `TargetStats` of this call.
    """
    templates = load_templates(families)
    total = sum(len(t) for t in templates.values())
    if not 1 <= templates_per_record <= total:
        raise ConfigError(f"templates_per_record must be between 1 and {total} for these families")
    if batch_size < 1 or min_tokens > max_tokens:
        raise ConfigError("batch_size must be >= 1 and min_tokens <= max_tokens")
    shard, device = auto_shard(shard, device)
    path = shard_path(out_path, *shard) if shard[1] > 1 else Path(out_path)
    model, tokenizer, llm_name = _load_llm(llm, dtype, device)
    stop_ids = _stop_ids(model, tokenizer)
    generate_fn = generate_fn or greedy_generate

    # Everything that decides which lines get written: a resume with other settings would mix two outputs.
    settings = {
        "manifest": str(Path(manifest_in).resolve()), "llm": llm_name, "templates": templates,
        "templates_per_record": templates_per_record, "batch_size": batch_size, "max_new_tokens": max_new_tokens,
        "min_tokens": min_tokens, "max_tokens": max_tokens, "require_final_punctuation": require_final_punctuation,
        "seed": seed, "shard": list(shard),
    }
    meta = read_meta(path) if resume and path.exists() else {}
    if meta and meta.get("settings") != json.loads(json.dumps(settings)):
        raise ConfigError(f"{path} was written with other settings ({meta_path(path)}); pass resume=False to restart")
    stats = TargetStats()
    last = recover_output(path) if resume else None
    if meta.get("finished"):
        return stats
    if not resume and path.exists():
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_meta(path, {"settings": settings, "finished": False})

    with open(path, "ab") as out:
        for rows in _blocks(manifest_in, batch_size, shard):
            stats.records += len(rows)
            samples = [
                _Sample(row, line_number, family, templates[family][number])
                for index, line_number, row in rows
                if row["transcript"].strip()
                for family, number in pick_templates(templates, index, seed, templates_per_record)
            ]
            done = count_done(samples, last)
            stats.already_done += done
            if samples and done == len(samples):
                continue
            empty = sum(not row["transcript"].strip() for _, _, row in rows)
            if empty:
                stats.drop("empty_transcript", empty * templates_per_record)
            if not samples:
                continue
            # The whole batch is generated again even when part of it was written, so padding stays the same.
            lines = _answer(samples, done, model, tokenizer, stop_ids, generate_fn, stats, max_new_tokens,
                            min_tokens, max_tokens, require_final_punctuation)
            out.write(b"".join(lines))
            out.flush()
            os.fsync(out.fileno())
    write_meta(path, {"settings": settings, "finished": True})
    return stats


def _answer(samples, done, model, tokenizer, stop_ids, generate_fn, stats, max_new_tokens, min_tokens, max_tokens,
            require_final_punctuation) -> list[bytes]:
    """Generate for one batch; returns the JSONL lines of samples[done:] that pass the filters."""
    prompts = [build_prompt(tokenizer, sample.prompt()) for sample in samples]
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), stop_ids[0], dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, prompt in enumerate(prompts):  # left padding: every answer starts at the same column
        input_ids[i, width - len(prompt):] = torch.tensor(prompt)
        attention_mask[i, width - len(prompt):] = 1
    device = next(model.parameters()).device
    start = time.perf_counter()
    new_tokens = generate_fn(model, input_ids.to(device), attention_mask.to(device), max_new_tokens, stop_ids)
    stats.generation_seconds += time.perf_counter() - start

    lines = []
    for sample, tokens in zip(samples, new_tokens.tolist()):
        end = next((i for i, t in enumerate(tokens) if t in stop_ids), None)
        stats.generated_tokens += len(tokens) if end is None else end + 1
        if done:  # written by an earlier run
            done -= 1
            continue
        response = tokenizer.decode(tokens[:end], skip_special_tokens=True).strip() if end is not None else ""
        reason = (
            "no_eos" if end is None
            else "empty" if not response
            else "too_short" if end < min_tokens
            else "too_long" if end > max_tokens
            else "no_final_punctuation" if require_final_punctuation and not ends_in_punctuation(response)
            else None
        )
        if reason:
            stats.drop(reason)
            continue
        stats.kept += 1
        row = {
            "audio": sample.row["audio"], "transcript": sample.row["transcript"],
            "instruction": sample.instruction, "response": response, "ends_with_eos": True, "task": "instruction",
            "family": sample.family, "source_line": sample.source_line,
        }
        row.update((k, v) for k, v in sample.row.items() if k not in row)
        lines.append((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
    return lines


def _blocks(manifest_in, batch_size: int, shard: tuple[int, int]) -> Iterator[list[tuple[int, int, dict]]]:
    """This shard's blocks of (row index, line number, row); block b of `batch_size` rows goes to shard b % n.
    Only this shard's rows are parsed; a bad one stops the run with DataError("file:line: reason")."""
    k, n = shard
    block = []
    for index, line in enumerate(read_jsonl(manifest_in)):
        if (index // batch_size) % n == k:
            try:
                block.append((index, line.number, _source_row(line)))
            except BadRow as e:
                raise DataError(str(e)) from None
        if (index + 1) % batch_size == 0 and block:
            yield block
            block = []
    if block:
        yield block


def _source_row(line: JsonLine) -> dict:
    row = line.row()
    if "audio" not in row or not isinstance(row.get("transcript"), str):
        raise BadRow("each row needs 'audio' and a string 'transcript'", line.where)
    try:
        row_segment(row)  # a segment the training reader would refuse is refused here, before any generation
    except BadRow as e:
        raise e.at(line.where) from None
    return row


def _load_llm(llm, dtype, device):
    """(model, tokenizer, name); a name or path loads on cuda in bf16 when available, else on the CPU in fp32."""
    if isinstance(llm, (tuple, list)):
        model, tokenizer = llm
        return model.eval(), tokenizer, getattr(model.config, "name_or_path", "") or type(model).__name__
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    if dtype == "auto":
        dtype = torch.bfloat16 if str(device).startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
    try:
        with reading_model(llm, "text LLM"):
            tokenizer = AutoTokenizer.from_pretrained(llm, trust_remote_code=False)
            model = AutoModelForCausalLM.from_pretrained(llm, dtype=dtype, trust_remote_code=False).to(device)
    except OSError as error:
        raise ConfigError(f"cannot load the text LLM {llm!r}: {error}") from None
    return model.eval(), tokenizer, str(llm)


def _stop_ids(model, tokenizer) -> list[int]:
    """EOS of the tokenizer plus the model's end-of-turn ids (e.g. Llama 3's <|eot_id|>); the first pads."""
    ids = [tokenizer.eos_token_id]
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids += configured if isinstance(configured, list) else [configured]
    ids = list(dict.fromkeys(i for i in ids if i is not None))
    if not ids:
        raise ConfigError("the text LLM's tokenizer has no EOS token; generations could never end")
    return ids
