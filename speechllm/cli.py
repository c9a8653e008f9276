"""The `speechllm` command. It only parses arguments and calls the library."""

from __future__ import annotations

import argparse
import json
import sys

from .errors import SpeechLLMError


def cmd_train(args):
    from .training.config import load_train_config
    from .training.trainer import train

    config = load_train_config(args.recipe, args.overrides)
    final = train(config, resume=args.resume)
    print(f"final model: {final}")


def cmd_targets(args):
    from .training.targets import generate_targets

    stats = generate_targets(
        args.manifest, args.output, llm=args.llm, families=tuple(args.families.split(",")),
        templates_per_record=args.templates_per_record, batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens, seed=args.seed, resume=not args.no_resume,
    )
    print(json.dumps(stats, indent=1, default=str))


def cmd_demo(args):
    """Build a tiny random model and answer about a generated tone: proves the install works offline."""
    import numpy as np

    from .testing import tiny_model

    model = tiny_model()
    rate = 16000
    t = np.arange(rate) / rate
    clip = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    conversation = [{"role": "user", "content": [{"type": "text", "text": "Transcribe: "}, {"type": "audio", "audio": (clip, rate)}]}]
    batch = model.processor([conversation])
    tokens = model.generate(**batch, max_new_tokens=16, do_sample=False)
    print("tiny random model (meaningless words, real code path):", model.processor.decode(tokens)[0])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="speechllm", description=__doc__)
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("train", help="train a model from a YAML recipe")
    p.add_argument("recipe", help="YAML recipe, e.g. configs/tiny.yaml")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. stages.0.steps=10 output_dir=runs/x")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in output_dir")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("targets", help="self-generated targets: a text LLM answers instructions about transcripts")
    p.add_argument("manifest", help="input JSONL manifest with audio and transcript")
    p.add_argument("output", help="output JSONL manifest")
    p.add_argument("--llm", required=True, help="hub id or local path of the text LLM")
    p.add_argument("--families", default="repeat,paraphrase,keywords,intent,sentiment,continuation,translation,answer")
    p.add_argument("--templates-per-record", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-resume", action="store_true", help="start over instead of continuing a partial output")
    p.set_defaults(func=cmd_targets)

    p = sub.add_parser("demo", help="answer about a generated clip with a tiny random model (offline check)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from . import __version__

        print(__version__)
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        args.func(args)
    except SpeechLLMError as error:
        print(f"speechllm: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
