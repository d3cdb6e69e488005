r"""Export a finished training run's weights: the LoRA in diffusers format (with the run's metadata), in the
key format ComfyUI loads for the run's model family, and the merged transformer (LoRA folded in) as a
diffusers folder.

    python recipes/export.py --run runs/dpo                               # all formats, into runs/dpo/exports
    python recipes/export.py --run runs/dpo --formats comfyui,merged --out exports/ \
        --set model.path=/models/Wan2.2-TI2V-5B-Diffusers      # the base model is elsewhere on this machine

Reads the run folder only (config.yaml, else the newest checkpoint's config.json; pytorch_lora_weights.
safetensors; eval.json when present), never unpickling anything. --config replaces the run's config, --set
overrides its keys (the merged export loads the base model from model.path). Writes
OUT/pytorch_lora_weights.safetensors, OUT/comfyui_lora.safetensors, OUT/transformer_merged/ and
OUT/transformer_merged.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from videogpa.engine.core.cli import comma_list, run_recipe
from videogpa.engine.core.config import EXPORT_FORMATS


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a finished trainer run folder (recipes/dpo.py --output-dir)")
    p.add_argument(
        "--formats",
        type=comma_list,
        default=list(EXPORT_FORMATS),
        metavar="A,B",
        help=f"comma-separated, of {','.join(EXPORT_FORMATS)} (default: all)",
    )
    p.add_argument("--out", help="output folder (default: RUN/exports)")
    p.add_argument("--config", help="the run's trainer config (default: RUN/config.yaml)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a key of the run's config, e.g. --set model.path=DIR (repeatable)",
    )
    args = p.parse_args(argv)

    def body() -> int:
        from videogpa.engine.train.exports import export_run

        out = Path(args.out) if args.out else Path(args.run) / "exports"
        for path in export_run(args.run, args.formats, out, args.config, args.overrides):
            print(path)
        return 0

    return run_recipe(body)


if __name__ == "__main__":
    sys.exit(main())
