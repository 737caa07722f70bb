"""Benchmark reports name the machine: the CPU's model, not just its architecture."""
import os
import platform
from pathlib import Path

import pytest

from freeprompt.io import runinfo


def test_cpu_model_reads_cpuinfo():
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo on this platform (Linux only)")
    names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines() if ln.startswith("model name")]
    if not names:
        pytest.skip("/proc/cpuinfo has no 'model name' line here (e.g. some ARM kernels)")
    assert runinfo.cpu_model() == names[0]


def test_cpu_model_falls_back_without_cpuinfo(monkeypatch):
    def no_file(*args, **kwargs):
        raise OSError("no /proc here")

    monkeypatch.setattr("builtins.open", no_file)
    assert runinfo.cpu_model() == (platform.processor() or platform.machine())


def test_cpu_device_description_names_model_and_cores():
    text = runinfo.device_description("cpu")
    assert runinfo.cpu_model() in text and f"{os.cpu_count()} cores" in text
