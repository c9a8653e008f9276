"""Batched greedy generation against batch 1: clips/s of each, their ratio, and whether the tokens are identical.
Same model, same clips, same machine, one run.

    python bench/generation_batching.py [--clips 32] [--batch 16] [--new-tokens 32]

Model: the packaged Whisper tiny.en encoder (real weights, 30 s windows as Whisper requires), a stack-4 MLP
connector and a random 6-layer Llama of width 512 with a 32k vocabulary (TinyLlama's size). Every clip generates
exactly --new-tokens tokens (min = max), so both runs do the same work. Clips: the speech clips of
../shared/realspeech-dev when present (real lengths, 1-10 s), else synthetic 3-6 s tones.

Two figures: end to end (audio features, encoder, connector, prefill and decoding: what a user waits for) and
decoding alone (audio embeddings computed beforehand), which shows how much of the end-to-end time the encoder's
fixed 30 s window takes.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from speechllm.audio import load_audio  # noqa: E402
from speechllm.models import SpeechLLMForConditionalGeneration  # noqa: E402
from speechllm.pretrained import packaged_whisper_path  # noqa: E402
from speechllm.prompting import instructions, prompt_message  # noqa: E402
from speechllm.testing import tiny_llm_config, tiny_tokenizer  # noqa: E402

REALSPEECH = Path(__file__).resolve().parents[2] / "shared" / "realspeech-dev"


def build_model() -> SpeechLLMForConditionalGeneration:
    # tiny_llm_config's large init range keeps random logits decisive: with near-ties, fp32 rounding differences
    # between padded and unpadded rows could flip a greedy choice and hide real mismatches among false ones.
    llm = tiny_llm_config(32000, hidden_size=512, intermediate_size=1408, num_hidden_layers=6,
                          num_attention_heads=8, num_key_value_heads=8)
    spec = {"encoder": {"family": "whisper", "name_or_path": str(packaged_whisper_path("tiny.en"))},
            "connector": {"type": "stack_mlp", "options": {"stack": 4}},
            "llm": {"hf_config": llm}}
    torch.manual_seed(0)
    return SpeechLLMForConditionalGeneration.from_spec(spec, tokenizer=tiny_tokenizer()).eval()


def load_clips(count: int) -> tuple[list, str]:
    """`count` clips as 16 kHz arrays, and where they come from."""
    manifest = REALSPEECH / "manifest.jsonl"
    if manifest.is_file():
        rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
        paths = [REALSPEECH / r["audio"] for r in rows if r.get("speech_activity") and r.get("transcript")]
        clips = [load_audio(p) for p in (paths * (count // len(paths) + 1))[:count]]
        return clips, f"{count} speech clips of {REALSPEECH}"
    from speechllm.data.toy import build_tone_corpus

    folder = Path(tempfile.mkdtemp())
    manifest = build_tone_corpus(folder, count, seconds=(3.0, 6.0))
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    return [load_audio(manifest.parent / r["audio"]) for r in rows], f"{count} synthetic 3-6 s tones"


def run(model, clips, batch_size: int, new_tokens: int, embeds_only: bool) -> tuple[float, list[list[int]]]:
    """Greedy generation over `clips` in batches -> (seconds, one token list per clip)."""
    prompt = instructions("asr")[0]
    # Batches of similar lengths: left padding to the longest clip of a batch is prefill work thrown away.
    order = sorted(range(len(clips)), key=lambda i: len(clips[i])) if batch_size > 1 else list(range(len(clips)))
    batches = []
    for start in range(0, len(clips), batch_size):
        group = [clips[i] for i in order[start:start + batch_size]]
        batch = model.processor([[prompt_message(prompt, (c, 16000))] for c in group])
        if embeds_only:  # the encoder and connector run here, before the clock starts
            with torch.no_grad():
                batch = {"inputs_embeds": model.embed(batch["input_ids"], batch["audio_values"],
                                                      batch["audio_lengths"]),
                         "attention_mask": batch["attention_mask"]}
        batches.append(batch)
    options = dict(do_sample=False, min_new_tokens=new_tokens, max_new_tokens=new_tokens,
                   pad_token_id=model.processor.tokenizer.pad_token_id)
    tokens = []
    started = time.perf_counter()
    with torch.no_grad():
        for batch in batches:
            generate = model.language_model.generate if embeds_only else model.generate
            tokens += generate(**batch, **options).tolist()
    seconds = time.perf_counter() - started
    by_clip = dict(zip(order, tokens))
    return seconds, [by_clip[i][-new_tokens:] for i in range(len(clips))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    args = parser.parse_args()
    model = build_model()
    clips, origin = load_clips(args.clips)
    run(model, clips[:2], 2, 4, embeds_only=False)  # warm-up: first-call allocations and lazy imports
    result = {"clips": origin, "device": "cpu", "torch_threads": torch.get_num_threads(),
              "new_tokens_per_clip": args.new_tokens}
    for name, embeds_only in (("end_to_end", False), ("decoding_only", True)):
        single_s, single = run(model, clips, 1, args.new_tokens, embeds_only)
        batched_s, batched = run(model, clips, args.batch, args.new_tokens, embeds_only)
        result[name] = {
            "batch1_clips_per_s": round(len(clips) / single_s, 2),
            f"batch{args.batch}_clips_per_s": round(len(clips) / batched_s, 2),
            "speedup": round(single_s / batched_s, 2),
            "mismatched_clips": sum(a != b for a, b in zip(single, batched)),
        }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
