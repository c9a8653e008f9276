"""A saved model with other Whisper encoder settings, to compare the 30 s window with the clip-length encoder on the
same adapters: the folder is copied (weights linked, not duplicated) and config.json's encoder section is updated.

    python bench/encoder_variant.py speechllm/resources/default_model runs/clip_length \
        '{"crop_to_length": true, "options": {"pad_to_window": false}}'
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

from speechllm.models.packaged import packaged_model_path, packaged_name


def encoder_variant(model_dir: str | os.PathLike, out_dir: str | os.PathLike, encoder: dict) -> Path:
    """`out_dir`: the model of `model_dir` (a folder or a packaged model's name) with `encoder` merged into its
    config's encoder section (a key set to None is removed: the default applies)."""
    source = Path(packaged_model_path(packaged_name(str(model_dir))) if packaged_name(str(model_dir)) else model_dir)
    out = Path(out_dir)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for item in source.iterdir():
        if item.name != "config.json":
            (out / item.name).symlink_to(item.resolve())
    config = json.loads((source / "config.json").read_text())
    section = {**config["spec"]["encoder"], **encoder}
    config["spec"]["encoder"] = {k: v for k, v in section.items() if v is not None}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("out")
    parser.add_argument("encoder", help="JSON object merged into the encoder section of config.json")
    args = parser.parse_args()
    print(encoder_variant(args.model, args.out, json.loads(args.encoder)))
