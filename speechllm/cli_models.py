"""The command line's model-format subcommands: `convert` (a seed project's released checkpoint into a speechllm
folder) and `export` (a speechllm model into a format an existing engine serves). Each only calls the library."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def cmd_export(args):
    from .export import export_model

    if args.format == "gguf":
        out = export_model(args.model, args.out, format="gguf", llama_cpp=args.llama_cpp)
        log.info("exported to %s; serve it with: llama-mtmd-cli -m %s/model.gguf --mmproj %s/mmproj.gguf --jinja "
                 "--temp 0 --audio CLIP -p PROMPT", out, out, out)
        return
    out = export_model(args.model, args.out, format=args.format)
    log.info("exported to %s; serve it with: vllm serve %s --trust-remote-code", out, out)


def add_export_parser(sub) -> None:
    p = sub.add_parser("export", help="write a trained model in a format an existing engine serves (vLLM: Ultravox, "
                                      "llama.cpp: GGUF)")
    p.add_argument("model", help="saved model directory, hub id or packaged model name")
    p.add_argument("out", help="folder to write")
    p.add_argument("--format", default="ultravox-hf",
                   help="ultravox-hf (default): a Hugging Face Ultravox folder that vLLM serves; gguf: model.gguf + "
                        "mmproj.gguf that llama.cpp serves")
    p.add_argument("--llama-cpp", help="gguf: the llama.cpp checkout whose convert_hf_to_gguf.py writes the files "
                                       "(default: $LLAMA_CPP_DIR)")
    p.set_defaults(func=cmd_export)


def cmd_convert(args):
    from .convert import convert

    options = {"encoder_config": args.encoder_config, "llm_config": args.llm_config, "tokenizer": args.tokenizer,
               "llm": args.llm, "normalize": args.normalize, "allow_pickle": args.allow_pickle or None}
    convert(args.source, args.out, args.source_format, **{k: v for k, v in options.items() if v is not None})
    log.info("converted %s (%s) into %s", args.source, args.source_format, args.out)


def add_convert_parser(sub) -> None:
    p = sub.add_parser("convert", help="convert a seed project's released checkpoint into a speechllm model folder")
    p.add_argument("source", help="their checkpoint: hub id (e.g. skit-ai/speechllm-2B), folder or file")
    p.add_argument("out", help="folder to write the speechllm model to")
    p.add_argument("--from", dest="source_format", required=True,
                   help="whose checkpoint: skit-ai, speech-summarization or self-powered")
    p.add_argument("--encoder-config", help="audio encoder config (folder or hub id) instead of the one it names")
    p.add_argument("--llm-config", help="LLM config (folder or hub id) instead of the one it names (skit-ai)")
    p.add_argument("--tokenizer", help="tokenizer (folder or hub id) instead of the one it names")
    p.add_argument("--llm", help="the frozen LLM (speech-summarization; default GeneZC/MiniChat-3B)")
    p.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                   help="waveform normalisation (skit-ai; default: their audio processor's do_normalize)")
    p.add_argument("--allow-pickle", action="store_true",
                   help="read torch pickles that hold more than tensors (runs code from the file: trusted files only)")
    p.set_defaults(func=cmd_convert)
