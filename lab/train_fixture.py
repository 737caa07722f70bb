"""Train the shapes fixture model (see lab/fixture/training.py; run from the repository root). Examples:

    # the CPU recipe (2 cores, ~78 min on a 2.6 GHz Xeon): the shipped fixture in one run, a from-scratch stage
    # and two refinement stages (--refine-stages; "" trains the from-scratch stage only)
    OMP_NUM_THREADS=2 python -m lab.train_fixture --out DIR --threads 2
    # continue a trained fixture for 400 steps with colour swaps (no further stages)
    python -m lab.train_fixture --out DIR --init-from FOLDER --unet-steps 400 --unet-lr 1e-4 --warmup 20 \\
        --colour-swap-fraction 0.5 --refine-stages ""
    # on a GPU, fitted into 7 minutes, 32x32 latents (a x2 VAE)
    python -m lab.train_fixture --out DIR --device cuda --mixed-precision bf16 --time-budget-min 7 \\
        --vae-channels 32,64 --unet-batch 256
    # the same with torch.compile'd forwards (fewer kernel launches per step on a GPU)
    python -m lab.train_fixture --out DIR --device cuda --mixed-precision bf16 --compile default ...
    # the latest checkpoint of a run (also while it trains) as a model folder, to score it
    python -m lab.train_fixture --export-checkpoint DIR.work --out SNAPSHOT

A run resumes from its work folder (DIR.work, or --work) when it is started again with the same settings.
"""

import argparse
import dataclasses
import sys
from pathlib import Path

from freeprompt.errors import FreepromptError
from lab.fixture.training import TrainConfig, export_checkpoint, train


def _ints(text: str) -> tuple:
    return tuple(int(v) for v in text.split(","))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--work", type=Path, default=None, help="checkpoint folder (resumes from it)")
    parser.add_argument("--data-file", type=Path, default=None, help="cache of the rendered training set (.npz)")
    parser.add_argument("--workers", type=int, default=1, help="processes that render the training set")
    parser.add_argument("--init-from", type=Path, default=None, help="continue from this trained fixture folder")
    parser.add_argument("--export-checkpoint", type=Path, default=None, metavar="WORK",
                        help="write the latest checkpoint in this work folder to --out as a model folder, and stop")
    parsers = {"int": int, "float": float, "str": str, "tuple": _ints}
    for field in dataclasses.fields(TrainConfig):
        if field.type in parsers:
            parser.add_argument("--" + field.name.replace("_", "-"), type=parsers[field.type], default=field.default)
    args = parser.parse_args()
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    try:
        if args.export_checkpoint:
            export_checkpoint(args.export_checkpoint, args.out, overwrite=args.overwrite)
            sys.exit(0)
        train(args.out, TrainConfig(**overrides), overwrite=args.overwrite, work_dir=args.work,
              data_file=args.data_file, workers=args.workers, init_from=args.init_from)
    except FreepromptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
