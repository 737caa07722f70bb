"""``freeprompt ui`` as a process (issue #35): a port in use and a host that is not this machine's are refused in one
line with exit status 2, quickly and before the model loads (gradio alone retried a bad host for minutes and left
its server threads running); a server that cannot start stops what it started; Ctrl-C while starting, loading or
serving stops the server and exits 130 with "freeprompt: interrupted", no traceback. Every process runs under a
timeout, so a hang fails the test instead of the run."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from support.signals import interruptible

pytest.importorskip("gradio", reason="the web UI needs the ui extra (pip install 'freeprompt[ui]')")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def env(tmp_path):
    return {**os.environ, "FREEPROMPT_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}


@pytest.fixture
def taken():
    """A port someone else is listening on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


def refused(argv, env, timeout: float = 60):
    """(the one stderr line, seconds) of a ``freeprompt ui`` that must exit 2 without loading its model."""
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "freeprompt", "ui", "--model", "shapes", *argv], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith("freeprompt: error: "), done.stderr
    assert "loading" not in done.stdout and "serving" not in done.stdout, done.stdout
    return lines[0], time.monotonic() - start


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "localhost"])
def test_a_port_in_use_is_refused_in_one_line(taken, env, host):
    line, seconds = refused(["--port", str(taken), "--host", host], env)
    assert f"port {taken} on {host} is in use" in line and "--port" in line
    assert seconds < 30


@pytest.mark.parametrize("argv", [["--host", "not a host"], ["--host", "not a host", "--port", "8123"],
                                  ["--host", "no-such-host.invalid"], ["--host", "192.0.2.1"]],
                         ids=["words", "words-with-port", "unknown-name", "not-this-machine"])
def test_a_host_that_is_not_this_machines_is_refused_in_one_line(argv, env):
    line, seconds = refused(argv, env)
    assert "--host" in line and "127.0.0.1" in line
    assert seconds < 30


def test_a_server_that_cannot_start_is_one_line_and_leaves_no_threads(tiny_pipe, taken):
    # the port is taken after the command's own check (a race): gradio's failure, its threads stopped
    from freeprompt.errors import BadInput
    from freeprompt.models.loading import LoadedModel
    from freeprompt.ui.app import launch

    before = set(threading.enumerate())
    with pytest.raises(BadInput, match=f"cannot serve on 127.0.0.1 port {taken}"):
        launch(LoadedModel(tiny_pipe, {"id": "tiny"}, {}), port=taken, block=False)
    time.sleep(0.5)
    assert not [t for t in threading.enumerate() if t not in before and not t.daemon]


def interrupted(proc, timeout: float = 60):
    """Ctrl-C ``proc``; its exit status and stderr's non-empty lines."""
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"still running {timeout} s after Ctrl-C: {proc.communicate()}")
    return proc.returncode, [line for line in err.splitlines() if line.strip()]


def wait_for_line(proc, word: str, deadline: float = 180) -> None:
    """Until ``proc`` prints a line holding ``word`` (read in a thread, so a silent process cannot hang the test)."""
    found = threading.Event()

    def read():
        for line in proc.stdout:
            if word in line:
                found.set()
                return

    threading.Thread(target=read, daemon=True).start()
    if not found.wait(deadline):
        pytest.fail(f"the UI printed no {word!r} line in {deadline} s")


def wait_for_port(port: int, deadline: float = 180) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"nothing listens on {port} after {deadline} s")


@pytest.mark.parametrize("phase", ["starting", "loading", "loading-later", "serving"])
def test_ctrl_c_stops_the_ui_with_one_line_and_status_130(env, phase):
    # inside torch's, diffusers' and gradio's imports and loaders a KeyboardInterrupt used to come out as a load
    # error, a RecursionError, or not at all (the server then started and kept serving)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "freeprompt", "ui", "--model", "shapes", "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=interruptible)
    try:
        if phase == "starting":
            time.sleep(1.0)  # importing torch
        elif phase.startswith("loading"):
            wait_for_line(proc, "loading")  # the model is loading
            time.sleep(1.5 if phase == "loading-later" else 0)  # diffusers' lazy imports, or gradio starting
        else:
            wait_for_line(proc, "serving")
            wait_for_port(port)
        code, lines = interrupted(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 130 and lines == ["freeprompt: interrupted"], (code, lines)
    with socket.socket() as s:  # the port is free again
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


STUCK_SERVER = """
import time
from freeprompt.cli import ui_cmd

ui_cmd.CLOSE_WITHIN_S = 1.0


class Stuck:  # a server whose shutdown never ends
    def close(self, verbose=True):
        time.sleep(3600)


with ui_cmd.interrupt_stops_at_once([Stuck().close]):
    print("serving", flush=True)
    time.sleep(120)
"""


def test_ctrl_c_while_serving_ends_the_process_even_when_the_server_does_not_close(env):
    """The server is given CLOSE_WITHIN_S to close (1 s here); then the process ends anyway, with the one line."""
    proc = subprocess.Popen([sys.executable, "-c", STUCK_SERVER], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=interruptible)
    try:
        wait_for_line(proc, "serving", deadline=60)
        start = time.monotonic()
        code, lines = interrupted(proc, timeout=30)
        elapsed = time.monotonic() - start
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 130 and lines == ["freeprompt: interrupted"], (code, lines)
    assert 1.0 <= elapsed < 15, elapsed  # waited for the server, but not for ever
