"""Load test of `speechllm serve`: request batching on vs off, measured side by side in one run.

Builds a model of realistic shape (the packaged Whisper tiny.en encoder, a stack_mlp connector, a small random
Llama), saves it, and for each setting starts `speechllm serve` as a subprocess on a free loopback port. Then
CLIENTS concurrent clients send REQUESTS requests in all (chat with an input_audio clip, and metadata), and it
reports requests/s, p50/p95 latency, errors and the server's peak RSS, then the throughput ratio.
Loopback only; bounded by the request count and --max-seconds. Whisper pads every clip to 30 s, so the encoder
costs the same per clip in a batch or alone: batching saves decoder steps, and gains more as answers grow longer.

    .venv/bin/python bench/serve_load.py                      # 32 clients, 96 requests per setting
    .venv/bin/python bench/serve_load.py --requests 192 --max-tokens 16   # shorter answers: encoder-bound
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf


def build_model(out_dir: Path) -> str:
    """Save a Whisper tiny.en + stack_mlp + random small Llama model to `out_dir`; returns its shape in words."""
    from speechllm import SpeechLLMForConditionalGeneration
    from speechllm.pretrained import packaged_whisper_path
    from speechllm.testing import tiny_llm_config, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    llm = tiny_llm_config(len(tokenizer) + 8, hidden_size=256, intermediate_size=704, num_hidden_layers=4,
                          num_attention_heads=4, num_key_value_heads=2)
    spec = {"encoder": {"family": "whisper", "name_or_path": str(packaged_whisper_path("tiny.en"))},
            "connector": {"type": "stack_mlp"}, "llm": {"hf_config": llm}}
    model = SpeechLLMForConditionalGeneration.from_spec(spec, tokenizer=tokenizer)
    model.save_pretrained(out_dir)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return f"Whisper tiny.en encoder + stack_mlp + random Llama (4 x 256), {params:.0f} M parameters"


def clips(count: int = 8) -> list[str]:
    """Base64 WAV clips of 2-6 s: noisy tones, so every request carries real audio of varied length."""
    rng, out = np.random.default_rng(0), []
    for i in range(count):
        t = np.arange(int(16000 * (2 + 4 * i / max(count - 1, 1)))) / 16000
        wave = 0.3 * np.sin(2 * np.pi * (120 + 30 * i) * t) + 0.02 * rng.standard_normal(len(t))
        buf = io.BytesIO()
        sf.write(buf, wave.astype(np.float32), 16000, format="WAV")
        out.append(base64.b64encode(buf.getvalue()).decode())
    return out


def request(i: int, audio: list[str], max_tokens: int) -> tuple[str, dict]:
    """Two of three requests are chat (greedy, max_tokens), one is metadata (three label fields)."""
    clip = audio[i % len(audio)]
    if i % 3 == 2:
        return "/v1/metadata", {"audio": clip, "format": "wav", "fields": ["Gender", "Age", "Accent"]}
    content = [{"type": "text", "text": "Transcribe the audio."},
               {"type": "input_audio", "input_audio": {"data": clip, "format": "wav"}}]
    return "/v1/chat/completions", {"model": "bench", "max_tokens": max_tokens,
                                    "messages": [{"role": "user", "content": content}]}


async def load(url: str, total: int, clients: int, max_tokens: int, deadline: float) -> tuple[list[float], int, float]:
    """`clients` workers send `total` requests between them; returns latencies, errors and wall time."""
    audio, latencies, errors, next_index = clips(), [], 0, iter(range(total))
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=httpx.Limits(max_connections=clients)) as http:
        async def client():
            nonlocal errors
            for i in next_index:
                if time.monotonic() > deadline:
                    errors += 1
                    continue
                path, body = request(i, audio, max_tokens)
                start = time.perf_counter()
                try:
                    r = await http.post(path, json=body)
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - start)
                errors += not ok

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        return latencies, errors, time.perf_counter() - start


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):  # the high-water mark of resident memory
            return int(line.split()[1]) / 1024
    return float("nan")


def run_setting(model_dir: Path, batching: bool, args, work: Path) -> dict:
    config = work / f"limits-{batching}.yaml"
    config.write_text(f"batching: {str(batching).lower()}\nbatch_window_ms: {args.window_ms}\n"
                      f"max_batch_size: {args.clients}\nrequest_timeout_s: 600\n")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "speechllm.cli", "serve", str(model_dir), "--port", str(port),
                               "--config", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        start = time.monotonic()
        while True:
            if server.poll() is not None:
                raise SystemExit(f"the server exited: {server.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() - start > 180:
                raise SystemExit("the server did not start within 180 s")
            time.sleep(0.3)
        asyncio.run(load(url, 3, 1, args.max_tokens, time.monotonic() + 120))  # warm-up: grammar compile, kernels
        latencies, errors, wall = asyncio.run(load(url, args.requests, args.clients, args.max_tokens,
                                                   time.monotonic() + args.max_seconds))
        rss = peak_rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(30)
    ordered = sorted(latencies)
    return {"batching": batching, "requests": len(latencies), "errors": errors, "rps": len(latencies) / wall,
            "p50": statistics.median(ordered), "p95": ordered[int(0.95 * (len(ordered) - 1))], "rss": rss,
            "wall": wall}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=96, help="requests per setting")
    parser.add_argument("--max-tokens", type=int, default=64, help="max_tokens of the chat requests")
    parser.add_argument("--window-ms", type=float, default=10.0, help="batch_window_ms when batching is on")
    parser.add_argument("--max-seconds", type=float, default=600, help="give up (as errors) after this, per setting")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shape = build_model(work / "model")
        print(f"model: {shape}\n{args.clients} concurrent clients, {args.requests} requests per setting "
              f"(2/3 chat with max_tokens={args.max_tokens}, 1/3 metadata), {os.cpu_count()} CPU cores\n")
        results = [run_setting(work / "model", batching, args, work) for batching in (True, False)]
    print(f"{'batching':<9} {'req/s':>7} {'p50 s':>7} {'p95 s':>7} {'errors':>6} {'peak RSS MB':>11} {'wall s':>7}")
    for r in results:
        print(f"{'on' if r['batching'] else 'off':<9} {r['rps']:7.2f} {r['p50']:7.2f} {r['p95']:7.2f} {r['errors']:6d} "
              f"{r['rss']:11.0f} {r['wall']:7.1f}")
    on, off = results
    print(f"\nthroughput with batching / without: {on['rps'] / off['rps']:.2f}x")
    return 1 if on["errors"] or off["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
