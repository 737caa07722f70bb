"""freeprompt's lab: how the shapes fixture model was made and studied. Not installed with the package.

Run from the repository root, e.g. ``python -m lab.train_fixture --out DIR``; see lab/README.md.
"""
