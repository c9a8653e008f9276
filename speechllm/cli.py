"""The `speechllm` command. It only parses arguments and calls the library.

Results (infer's JSON lines, eval's table) go to stdout; progress and messages go to stderr through the `speechllm`
logger (-q: warnings only, -v: debug, and transformers' own progress bars back on).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings

from .cli_models import add_convert_parser, add_export_parser
from .errors import SpeechLLMError
from .extras import require_extra

log = logging.getLogger(__name__)


PRECISION_HELP = ("auto (default): each part where it runs fastest, the LLM in bf16 on a CPU with native bf16 or a "
                  "GPU with bf16; fp32 or bf16 puts every part in that dtype")


def add_precision_option(parser) -> None:
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto", help=PRECISION_HELP)


def load_model(name, precision: str):
    """`speechllm.load(name)` with the dtype that `--precision` forces (None for auto)."""
    from . import load
    from .models.precision import precision_dtype

    return load(name, dtype=precision_dtype(precision))


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1 (batch sizes, counts, token limits)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def probability(text: str) -> float:
    """argparse type: a number from 0 to 1 (a confidence threshold)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, got {value}")
    return value


def port_number(text: str) -> int:
    """argparse type: a TCP port, 0-65535 (0: any free port)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0-65535, got {value}")
    return value


def cmd_train(args):
    from .recipes import recipe_path
    from .training.config import load_train_config
    from .training.trainer import train

    config = load_train_config(recipe_path(args.recipe), args.overrides)
    final = train(config, resume=args.resume)
    log.info("final model: %s", final)


def cmd_targets(args):
    from .data.targets import generate_targets

    stats = generate_targets(
        args.manifest, args.output, llm=args.llm, families=tuple(args.families.split(",")),
        templates_per_record=args.templates_per_record, batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens, seed=args.seed, resume=not args.no_resume,
    )
    print(json.dumps(stats, indent=1, default=str))


def cmd_heads(args):
    from . import load
    from .heads import fit_model_heads, parse_head_features

    head_features = parse_head_features(args.head)  # a typo fails before the model loads
    model = load(args.model, merge_adapters=False)  # saved again below: adapters stay adapters
    heads = fit_model_heads(model, args.manifests, head_features)
    model.save_pretrained(args.out, trainable_only=model.config.weights == "trainable")
    log.info("attribute heads %s fitted; model with heads written to %s", heads.fields, args.out)


def cmd_synth(args):
    from .data.synth import build_corpus

    voices = args.voices.split(",") if args.voices else None
    out = build_corpus(args.out_dir, args.count, seed=args.seed, workers=args.workers, voices=voices,
                       negatives_fraction=args.negatives, augment_prob=args.augment)
    log.info("corpus: %s (train.jsonl, dev.jsonl, test.jsonl, summary.json)", out)


def cmd_passages(args):
    from .data.synth.passages import build_passages

    voices = args.voices.split(",") if args.voices else None
    out = build_passages(args.out_dir, args.count, long_count=args.long, seed=args.seed, workers=args.workers,
                         voices=voices, augment_prob=args.augment)
    log.info("passages: %s (train/dev/test.jsonl, *-tasks.jsonl for training, summary.json)", out)


def cmd_quickstart(args):
    from .quickstart import quickstart

    require_extra("eval", "speechllm quickstart (it evaluates both models)")  # before minutes of work, not after

    quickstart(args.out_dir, clips=args.clips, steps=args.steps, batch_size=args.batch_size, real=args.real,
               eval_limit=args.eval_limit)


def cmd_demo(args):
    """Build a tiny random model and answer about a generated tone: proves the install works offline."""
    import numpy as np

    from .testing import tiny_model

    model = tiny_model()
    rate = 16000
    t = np.arange(rate) / rate
    clip = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    conversation = [{"role": "user", "content": [{"type": "text", "text": "Transcribe: "},
                                                  {"type": "audio", "audio": (clip, rate)}]}]
    batch = model.processor([conversation])
    tokens = model.generate(**batch, max_new_tokens=16, do_sample=False)
    print("tiny random model (meaningless words, real code path):", model.processor.decode(tokens)[0])


def cmd_eval(args):
    require_extra("eval", "speechllm eval")  # before the model loads
    from .evaluation import evaluate
    from .evaluation.report import markdown

    report = evaluate(
        load_model(args.model, args.precision), args.manifests,
        fields=args.fields.split(",") if args.fields is not None else None,
        batch_size=args.batch_size, baselines=("majority",) if args.no_cascade else ("cascade", "majority"),
        out_dir=args.out, limit=args.limit, model_name=args.model,
    )
    print(markdown(report))
    log.info("report written to %s/report.md and report.json", args.out)


def cmd_eval_gap(args):
    require_extra("eval", "speechllm eval-gap")  # before the model loads
    from .evaluation.gap_report import markdown
    from .evaluation.modality_gap import evaluate_gap
    from .prompt_styles import resolve_prompt_style

    style = resolve_prompt_style(args.prompt_style) if args.prompt_style else None  # a typo fails before the load
    report = evaluate_gap(load_model(args.model, args.precision), args.manifests, out_dir=args.out,
                          prompt_style=style, cascade=None if args.no_cascade else "auto",
                          batch_size=args.batch_size, limit=args.limit, model_name=args.model)
    print(markdown(report))
    log.info("report written to %s/report.md and report.json", args.out)


def cmd_infer(args):
    from .inference import check_output_path, collect_inputs, infer_clips, split_model_argument, write_json_lines

    name, audio = split_model_argument(args.inputs)
    clips = collect_inputs(audio)
    if args.out:  # before the model loads
        check_output_path(args.out, [*audio, *([name] if name else [])], clips)
    model = load_model(name, args.precision)  # None: the default model
    lines = infer_clips(model, clips, fields=args.fields.split(",") if args.fields is not None else None,
                        instruction=args.instruction, transcribe=args.transcribe,
                        batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                        min_confidence=args.min_confidence)  # bad options fail here
    failed = write_json_lines(lines, args.out)  # --out: written beside it and renamed at the end
    return 1 if failed else 0


def add_eval_parsers(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a model on manifests (WER, attribute accuracy, baselines, report)")
    p.add_argument("model", help="saved model directory, hub id or packaged model name (default, gemma-bridge)")
    p.add_argument("manifests", nargs="+", metavar="MANIFEST", help="JSONL evaluation manifest(s)")
    p.add_argument("--out", default="eval-report", help="folder for report.json, report.md, plots")
    p.add_argument("--fields", help="comma-separated fields to ask for (default: the labelled ones)")
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--no-cascade", action="store_true", help="skip the faster-whisper cascade baseline")
    p.add_argument("--limit", type=positive_int, help="evaluate the first N usable rows of each manifest")
    add_precision_option(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("eval-gap", help="modality gap: the same requests with the clip, its transcript, a cascade")
    p.add_argument("model", help="saved model directory, hub id or packaged model name (default, gemma-bridge)")
    p.add_argument("manifests", nargs="+", metavar="MANIFEST", help="JSONL manifest(s) with transcripts "
                                                                   "(spoken passages add questions and summaries)")
    p.add_argument("--out", default="gap-report", help="folder for report.json, report.md, predictions.jsonl")
    p.add_argument("--prompt-style", help="plain, few-shot (for base LLMs) or a JSON file (default: the model "
                                          "config's prompt_style, else plain)")
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--no-cascade", action="store_true", help="skip the faster-whisper cascade")
    p.add_argument("--limit", type=positive_int, help="evaluate the first N usable rows of each manifest")
    add_precision_option(p)
    p.set_defaults(func=cmd_eval_gap)

    p = sub.add_parser("infer", help="answer about audio files, folders or manifests; JSON lines out")
    p.add_argument("inputs", nargs="+", metavar="[MODEL] AUDIO", help="optional model, then files, folders, .jsonl")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--instruction", help="free-form request about each clip (answer in 'answer')")
    mode.add_argument("--fields", help="comma-separated metadata fields, e.g. Gender,Accent")
    mode.add_argument("--transcribe", action="store_true", help="transcripts (default: all metadata fields)")
    p.add_argument("--out", help="write JSON lines to this file (via OUT.partial, renamed at the end) instead of "
                                  "stdout; it may not be one of the inputs")
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--max-new-tokens", type=positive_int, default=256, help="for --instruction and --transcribe")
    p.add_argument("--min-confidence", type=probability, metavar="P",
                   help="metadata labels answered with a lower confidence (0-1) come back null: not sure")
    add_precision_option(p)
    p.set_defaults(func=cmd_infer)


def cmd_serve(args):
    from .serving import serve

    serve(args.models, host=args.host, port=args.port, api_key=args.api_key, config=args.config,
          precision=args.precision)


def add_serve_parser(sub) -> None:
    from .models.packaged import packaged_model_names

    p = sub.add_parser("serve", help="serve models over HTTP: OpenAI-compatible API, metadata, web page at /")
    p.add_argument("models", nargs="*", metavar="MODEL",
                   help=f"saved model directory, hub id or packaged model name ({', '.join(packaged_model_names())}), "
                        "as many as you like; ID=PATH serves PATH as ID. Requests pick one by `model` (the first "
                        "when they name none; default: the library's default model)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)")
    p.add_argument("--port", type=port_number, default=8000)
    p.add_argument("--api-key", help="require `Authorization: Bearer KEY` (default: $SPEECHLLM_API_KEY, else none)")
    p.add_argument("--config", help="YAML of server limits and batching (see speechllm/serving/config.py)")
    add_precision_option(p)
    p.set_defaults(func=cmd_serve)


def build_parser() -> argparse.ArgumentParser:
    from .recipes import recipe_names

    parser = argparse.ArgumentParser(prog="speechllm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("-q", "--quiet", action="store_true", help="messages: warnings and errors only")
    loudness.add_argument("-v", "--verbose", action="store_true", help="messages: debug detail and progress bars")
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("train", help="train a model from a YAML recipe")
    p.add_argument("recipe", help="YAML recipe file, or a packaged recipe's name: " + ", ".join(recipe_names()))
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. stages.0.steps=10 output_dir=runs/x")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in output_dir")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("targets", help="self-generated targets: a text LLM answers instructions about transcripts")
    p.add_argument("manifest", help="input JSONL manifest with audio and transcript")
    p.add_argument("output", help="output JSONL manifest")
    p.add_argument("--llm", required=True, help="hub id or local path of the text LLM")
    p.add_argument("--families", default="repeat,paraphrase,keywords,intent,sentiment,continuation,translation,answer")
    p.add_argument("--templates-per-record", type=positive_int, default=1)
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--max-new-tokens", type=positive_int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-resume", action="store_true", help="start over instead of continuing a partial output")
    p.set_defaults(func=cmd_targets)

    p = sub.add_parser("heads", help="fit attribute heads (small classifiers that decide label fields) onto a model")
    p.add_argument("model", help="saved model directory, hub id or packaged model name (default, gemma-bridge)")
    p.add_argument("manifests", nargs="+", metavar="MANIFEST", help="labelled JSONL training manifest(s)")
    p.add_argument("--head", action="append", required=True, metavar="FIELD=FEATURE,...",
                   help="a field and its features, e.g. Gender=pitch,formants (repeatable); features: "
                        "pitch, formants, vad, voice, encoder, encoder_layers")
    p.add_argument("--out", required=True, help="folder for the model with its heads")
    p.set_defaults(func=cmd_heads)

    p = sub.add_parser("data", help="build data sets")
    data = p.add_subparsers(dest="data_command", required=True)
    p = data.add_parser("synth", help="speak sentences with espeak-ng and piper voices: a labelled corpus with splits")
    p.add_argument("out_dir")
    p.add_argument("--count", type=positive_int, default=1000, help="number of clips (speech and non-speech)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=positive_int, default=2)
    p.add_argument("--voices", default=None, help="comma-separated voice ids or prefixes, e.g. espeak:en-gb,piper:")
    p.add_argument("--negatives", type=float, default=0.05, help="fraction of non-speech clips")
    p.add_argument("--augment", type=float, default=0.5, help="probability of noise/reverb/speed/gain per clip")
    p.set_defaults(func=cmd_synth)

    p = data.add_parser("passages", help="spoken passages with questions and summaries (QA and summary data)")
    p.add_argument("out_dir")
    p.add_argument("--count", type=positive_int, default=200, help="number of short passages (2-4 questions each)")
    p.add_argument("--long", type=int, default=20, help="number of long passages (1-3 minutes, with a summary)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=positive_int, default=2)
    p.add_argument("--voices", default=None, help="comma-separated voice ids or prefixes, e.g. espeak:en-us,piper:")
    p.add_argument("--augment", type=float, default=0.0, help="probability of noise/reverb/speed/gain per clip")
    p.set_defaults(func=cmd_passages)

    p = sub.add_parser("quickstart", help="answer with the default model, build a corpus, train, evaluate both")
    p.add_argument("--out-dir", default="runs/quickstart")
    p.add_argument("--clips", type=positive_int, default=400, help="size of the synthetic corpus")
    p.add_argument("--steps", type=positive_int, default=40, help="training steps")
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--real", default=None, metavar="MANIFEST",
                   help="a manifest of real recordings to evaluate on as well, "
                        "e.g. ../shared/realspeech-dev/manifest.jsonl")
    p.add_argument("--eval-limit", type=positive_int, default=40, help="clips per evaluation manifest")
    p.set_defaults(func=cmd_quickstart)

    p = sub.add_parser("demo", help="answer about a generated clip with a tiny random model (offline check)")
    p.set_defaults(func=cmd_demo)

    add_eval_parsers(sub)
    add_serve_parser(sub)
    add_export_parser(sub)
    add_convert_parser(sub)
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
    configure_logging(logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO)
    # peft calls a transformers method that transformers 5 deprecated: noise on every command, nothing to act on.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    try:
        code = args.func(args)  # a command may return its exit code (infer: 1 when a clip failed)
    except SpeechLLMError as error:
        log.error("speechllm: error: %s", error)
        return 1
    return code or 0


class _CurrentStderr(logging.StreamHandler):
    """Writes to sys.stderr as it is when a message is written, not when the handler was made (tests swap it)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _):
        pass


def configure_logging(level: int) -> None:
    """Send the `speechllm` logger's messages at `level` and above to stderr, plainly (the message alone).

    transformers' "Loading weights" progress bars are switched off below DEBUG: every command loads a model and
    the bars said nothing a user acts on. Done here, in the command's own process, and not on `import speechllm`,
    so that a program using the library keeps the transformers settings it chose."""
    logger = logging.getLogger("speechllm")
    if not any(isinstance(h, _CurrentStderr) for h in logger.handlers):  # main() may run twice in one process
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)
    from transformers.utils import logging as transformers_logging

    if level > logging.DEBUG:
        transformers_logging.disable_progress_bar()
    else:
        transformers_logging.enable_progress_bar()


if __name__ == "__main__":
    sys.exit(main())
