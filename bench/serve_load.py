"""Load test of `speechllm serve`: request batching on vs off, measured side by side in one run.

Builds a model of realistic shape (the packaged Whisper tiny.en encoder, a stack_mlp connector, a small random
Llama), saves it, and for each setting starts `speechllm serve` as a subprocess on a free loopback port. Then
CLIENTS concurrent clients send REQUESTS requests in all (chat with an input_audio clip, and metadata), and it
reports requests/s, p50/p95 latency, errors and the server's peak RSS, then the throughput ratio.
Loopback only; bounded by the request count and --max-seconds. Whisper pads every clip to 30 s, so the encoder
costs the same per clip in a batch or alone: batching saves decoder steps, and gains more as answers grow longer.

With `--adversarial SHARE` the two settings are instead a clean run and a hostile one, both batching: in the hostile
run SHARE of the clients send, over and over while the others are served, audio bombs (a FLAC of silence whose
honest header says 8 channels at a high rate), oversized prompts (over max_prompt_chars, or over the LLM's
positions) and slow bodies dripped a byte at a time. It reports the 5xx count, the good requests' p95 latency next
to the clean run's (the ratio), and each server's peak RSS. `--tiny` serves a tiny random model (a few minutes on
two cores).

    .venv/bin/python bench/serve_load.py                      # 32 clients, 96 requests per setting
    .venv/bin/python bench/serve_load.py --requests 192 --max-tokens 16   # shorter answers: encoder-bound
    .venv/bin/python bench/serve_load.py --adversarial 0.25 --tiny        # 8 of the 32 clients hostile
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf


def build_model(out_dir: Path, tiny: bool = False) -> str:
    """Save a Whisper tiny.en + stack_mlp + random small Llama model (or, `tiny`, speechllm.testing's tiny random
    model) to `out_dir`; returns its shape in words."""
    from speechllm import SpeechLLMForConditionalGeneration
    from speechllm.pretrained import packaged_whisper_path
    from speechllm.testing import tiny_llm_config, tiny_model, tiny_tokenizer

    if tiny:
        tiny_model().save_pretrained(out_dir)
        return "speechllm.testing.tiny_model (tiny random Whisper encoder + stack_mlp + 2-layer Llama)"
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


def hostile_requests() -> list[tuple[str, bytes]]:
    """(kind, JSON body) of each hostile chat request: an audio bomb, text over max_prompt_chars, a prompt over
    the LLM's positions. Built once: the FLAC of silence encodes small and decodes to 8 x 96,000 x 59 samples."""
    buf = io.BytesIO()
    sf.write(buf, np.zeros((96_000 * 59, 8), np.int16), 96_000, format="FLAC")
    bomb = base64.b64encode(buf.getvalue()).decode()

    def chat(*parts) -> bytes:
        return json.dumps({"model": "bench", "max_tokens": 8, "messages": [{"role": "user", "content": list(
            parts)}]}).encode()

    return [("audio bomb", chat({"type": "input_audio", "input_audio": {"data": bomb, "format": "flac"}})),
            ("text over max_prompt_chars", chat({"type": "text", "text": "a " * 150_000})),
            ("prompt over the positions", chat({"type": "text", "text": "word " * 6_000}))]


async def drip(url: str, stop: asyncio.Event) -> None:
    """A slow client: declares a 100 kB body and sends it a byte every half second until `stop` (or the server
    closes the connection)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: 100000\r\n\r\n{{".encode())
    try:
        while not stop.is_set() and not reader.at_eof():
            writer.write(b" ")
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
    except OSError:  # the server gave up on it: what a read timeout should do
        pass
    finally:
        writer.close()


async def load(url: str, total: int, clients: int, max_tokens: int, deadline: float,
               hostile: int = 0) -> dict:
    """`clients - hostile` workers send `total` good requests between them while `hostile` workers send hostile
    ones until the good ones are done. Returns the good requests' latencies and errors, the 5xx count of all, the
    hostile requests' statuses, and the wall time."""
    audio, latencies, errors, next_index = clips(), [], 0, iter(range(total))
    statuses: Counter[str] = Counter()
    server_errors, stop = 0, asyncio.Event()
    bad = hostile_requests() if hostile else []
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=httpx.Limits(max_connections=clients)) as http:
        async def client():
            nonlocal errors, server_errors
            for i in next_index:
                if time.monotonic() > deadline:
                    errors += 1
                    continue
                path, body = request(i, audio, max_tokens)
                start = time.perf_counter()
                try:
                    r = await http.post(path, json=body)
                    ok, server_errors = r.status_code == 200, server_errors + (r.status_code >= 500)
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - start)
                errors += not ok

        async def attacker(n: int):
            nonlocal server_errors
            if n % (len(bad) + 1) == len(bad):
                return await drip(url, stop)
            kind, body = bad[n % (len(bad) + 1)]
            while not stop.is_set():
                try:
                    r = await http.post("/v1/chat/completions", content=body,
                                        headers={"content-type": "application/json"})
                    statuses[f"{kind}: {r.status_code}"] += 1
                    server_errors += r.status_code >= 500
                except httpx.HTTPError as e:
                    statuses[f"{kind}: {type(e).__name__}"] += 1

        async def good_clients():
            await asyncio.gather(*(client() for _ in range(clients - hostile)))
            stop.set()

        start = time.perf_counter()
        await asyncio.gather(good_clients(), *(attacker(n) for n in range(hostile)))
        return {"latencies": latencies, "errors": errors, "server_errors": server_errors, "statuses": statuses,
                "wall": time.perf_counter() - start}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):  # the high-water mark of resident memory
            return int(line.split()[1]) / 1024
    return float("nan")


def run_setting(model_dir: Path, name: str, batching: bool, clients: int, hostile: int, args, work: Path) -> dict:
    config = work / f"limits-{name}.yaml"
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
        result = asyncio.run(load(url, args.requests, clients, args.max_tokens, time.monotonic() + args.max_seconds,
                                  hostile))
        rss = peak_rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(30)
    ordered = sorted(result["latencies"])
    return {"name": name, "requests": len(ordered), "errors": result["errors"], "rps": len(ordered) / result["wall"],
            "p50": statistics.median(ordered), "p95": ordered[int(0.95 * (len(ordered) - 1))], "rss": rss,
            "wall": result["wall"], "server_errors": result["server_errors"], "statuses": result["statuses"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=96, help="good requests per setting")
    parser.add_argument("--max-tokens", type=int, default=64, help="max_tokens of the chat requests")
    parser.add_argument("--window-ms", type=float, default=10.0, help="batch_window_ms when batching is on")
    parser.add_argument("--max-seconds", type=float, default=600, help="give up (as errors) after this, per setting")
    parser.add_argument("--adversarial", type=float, default=None, metavar="SHARE",
                        help="compare a clean run with one where this share of the clients is hostile")
    parser.add_argument("--tiny", action="store_true", help="serve speechllm.testing's tiny random model")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    hostile = round(args.clients * args.adversarial) if args.adversarial else 0
    if args.adversarial is not None and not 0 < hostile < args.clients:
        parser.error("--adversarial: give a share that leaves both good and hostile clients, e.g. 0.25")
    # the clean run has as many good clients as the hostile one: the ratio is the hostile clients' cost alone
    settings = ([("clean", True, args.clients - hostile, 0), ("hostile", True, args.clients, hostile)] if hostile
                else [("on", True, args.clients, 0), ("off", False, args.clients, 0)])
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shape = build_model(work / "model", args.tiny)
        print(f"model: {shape}\n{args.clients} concurrent clients ({hostile} of them hostile in the hostile run, "
              f"absent from the clean one), "
              f"{args.requests} good requests per setting (2/3 chat with max_tokens={args.max_tokens}, 1/3 metadata), "
              f"{os.cpu_count()} CPU cores\n")
        results = [run_setting(work / "model", *setting, args, work) for setting in settings]
    print(f"{'setting':<9} {'req/s':>7} {'p50 s':>7} {'p95 s':>7} {'errors':>6} {'5xx':>4} {'peak RSS MB':>11} "
          f"{'wall s':>7}")
    for r in results:
        print(f"{r['name']:<9} {r['rps']:7.2f} {r['p50']:7.2f} {r['p95']:7.2f} {r['errors']:6d} "
              f"{r['server_errors']:4d} {r['rss']:11.0f} {r['wall']:7.1f}")
    first, second = results
    if hostile:
        print("\nhostile requests answered: " + ", ".join(f"{k} x{v}" for k, v in sorted(second["statuses"].items())))
        print(f"good requests' p95 with hostile clients / clean: {second['p95'] / first['p95']:.2f}x; "
              f"peak RSS {second['rss']:.0f} MB vs {first['rss']:.0f} MB")
    else:
        print(f"\nthroughput with batching / without: {first['rps'] / second['rps']:.2f}x")
    return 1 if any(r["errors"] or r["server_errors"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
