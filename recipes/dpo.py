"""Diffusion-DPO fine-tuning: `deepspeed recipes/dpo.py [--config C.yaml] [--output-dir DIR] [--resume]`.

With no arguments it trains the built-in tiny model on a synthetic preference set (recipes/configs/tiny.yaml)
and prints/plots held-out preference accuracy before and after. `python recipes/dpo.py` runs the same on one
process without the launcher.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "tiny.yaml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML config (default: %(default)s)")
    parser.add_argument("--output-dir", help="where metrics, checkpoints, plots and weights go")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the newest intact checkpoint in it"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace another run's files in the output dir"
    )
    parser.add_argument(
        "--allow-config-change", action="store_true", help="resume although the config changed (recorded)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.max_steps=100 (repeatable)",
    )
    parser.add_argument(
        "--stop-after-steps", type=int, help="stop after this many steps without finishing (as a kill would)"
    )
    parser.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)  # from the launcher
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from videogpa.engine.core.cli import run_recipe
    from videogpa.engine.core.config_loading import (
        check_input_paths,
        check_output_folder,
        parse_config,
        require_real_paths,
    )

    def body() -> int:
        # the config's keys, types, placeholders, input folders and output folder first: seconds, before the
        # model stack loads
        cfg = parse_config(args.config, args.overrides)
        if args.output_dir:
            cfg.output_dir = args.output_dir
        require_real_paths(cfg)
        check_input_paths(cfg)
        check_output_folder(cfg.output_dir)
        import torch

        from videogpa.engine.runtime.distributed import share_cpu_threads

        if not torch.cuda.is_available():
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        share_cpu_threads()
        # DeepSpeed still calls the collectives torch renamed; the warning repeats every step.
        warnings.filterwarnings(
            "ignore", message=r".*(all_gather_into_tensor|reduce_scatter_tensor)", category=FutureWarning
        )
        from videogpa.engine.train.trainer import Trainer

        try:
            cfg.check()
        except ValueError as err:
            raise ValueError(f"{args.config}: {err}") from None
        trainer = Trainer(
            cfg, resume=args.resume, overwrite=args.overwrite, allow_config_change=args.allow_config_change
        )
        trainer.run(stop_after=args.stop_after_steps)
        return 0

    return run_recipe(body)


if __name__ == "__main__":
    sys.exit(main())
