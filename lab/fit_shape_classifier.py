"""Refit src/freeprompt/shapes/shape_classifier.npz (the oracle's shape classifier).

Run after changing the shapes in world.py or the features in oracle.py:
    python -m lab.fit_shape_classifier
Deterministic (fixed seed); uses random_sample seeds >= oracle.FIT_SEED_MIN only.
"""

import argparse
import time

import numpy as np
import torch

from freeprompt.shapes import oracle
from lab.fixture import classifier

torch.set_num_threads(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--n", type=int, default=4000, help="training masks (balanced over shapes)")
    ap.add_argument("--out", default=str(oracle.CLASSIFIER_PATH))
    args = ap.parse_args()
    t = time.perf_counter()
    model = classifier.fit_shape_classifier(seed=args.seed, n=args.n)
    np.savez(args.out, **model)
    print(f"fitted on {args.n} masks in {time.perf_counter() - t:.1f}s, "
          f"train accuracy {float(model['train_acc']):.4f} -> {args.out}")


if __name__ == "__main__":
    main()
