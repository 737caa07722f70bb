"""Train the shapes fixture model (see freeprompt.shapes.training). Example, the shipped recipe:

    OMP_NUM_THREADS=2 python scripts/train_fixture.py --out src/freeprompt/fixtures/shapes --overwrite
"""

import argparse
import dataclasses
from pathlib import Path

from freeprompt.shapes.training import TrainConfig, train

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--work", type=Path, default=None, help="checkpoint folder (resumes from it)")
    for field in dataclasses.fields(TrainConfig):
        if field.type in ("int", "float"):
            parser.add_argument("--" + field.name.replace("_", "-"), type=eval(field.type), default=field.default)
    args = parser.parse_args()
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    train(args.out, TrainConfig(**overrides), overwrite=args.overwrite, work_dir=args.work)
