"""Write DIR/report.html for a training run or a loop folder: one file that opens in a browser (images by
relative path) with the configuration and versions, counts per stage, score histograms and pictures, the
training curves, held-out accuracy over steps, validation frame grids and the before/after table.

    python recipes/report.py --run runs/dpo-tiny    # a training run (the trainer writes it at its end too)
    python recipes/report.py --run runs/loop        # a loop folder (the loop writes it at its end too)
"""

from __future__ import annotations

import argparse
import sys

from videogpa.engine.core.cli import run_recipe


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a training run folder or a loop folder")
    args = p.parse_args(argv)

    def body() -> int:
        from videogpa.engine.core.report import write_report

        print(write_report(args.run))
        return 0

    return run_recipe(body)


if __name__ == "__main__":
    sys.exit(main())
