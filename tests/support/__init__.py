"""Test-only helpers, imported by tests as ``support.<module>`` (tests/conftest.py puts tests/ on ``sys.path``):
the map-materialising references of FPE and the other methods, the table of bad command lines, the CLI runner,
the fuzzing settings and a step-callback hook."""
