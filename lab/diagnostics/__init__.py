"""Diagnostics from the fixture's development: each is run as ``python -m lab.diagnostics.<name> --help``."""
