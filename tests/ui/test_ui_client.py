"""The web UI over raw HTTP, through ``gradio_client`` (what a second tab, a script or a tester sends): the app runs
in-process on the tiny random model on a free local port. Two edits sent at the same time from two clients (a
generated image and a photo) each get exactly what they get alone; every value the page can send that the command
line would refuse (cleared fields, seed 1e30 or -1, NaN, too many targets) comes back as the one-line ``#error``
message, never gradio's bare "Error"."""

from __future__ import annotations

import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio", reason="the web UI needs the ui extra (pip install 'freeprompt[ui]')")
from gradio_client import Client, handle_file


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tiny_pipe, tmp_path_factory):
    from freeprompt.models.loading import LoadedModel
    from freeprompt.ui.app import close, launch

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FREEPROMPT_CACHE", str(tmp_path_factory.mktemp("cache")))
        port = free_port()
        loaded = LoadedModel(tiny_pipe, {"id": "tiny", "revision": None}, {"steps": 4, "guidance": 3.0})
        demo = launch(loaded, port=port, block=False)
        try:
            yield demo, f"http://127.0.0.1:{port}/"
        finally:
            close(demo)


def inputs(demo, api_name: str, **given) -> list:
    """The values of an event's inputs as the page starts, those named by label (spaces as _) replaced."""
    dependency = next(d for d in demo.config["dependencies"] if d.get("api_name") == api_name)
    values = []
    for block_id in dependency["inputs"]:
        block = demo.blocks[block_id]
        key = str(getattr(block, "label", "")).split(" (")[0].replace(" ", "_")
        values.append(given.pop(key) if key in given else getattr(block, "value", None))
    assert not given, f"no input labelled {sorted(given)}"
    return values


def pixels(shown) -> list[np.ndarray]:
    return [np.asarray(Image.open(item["image"]).convert("RGB")) for item in shown[0]]


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    from freeprompt.shapes import world

    path = tmp_path_factory.mktemp("photo") / "photo.png"
    Image.fromarray(world.random_sample(3, size=64, color="red", shape="circle").image).save(path)
    return path


def test_two_tabs_at_once_get_exactly_what_each_gets_alone(served, photo):
    demo, url = served
    generated = inputs(demo, "edit", Steps=12, Target_prompts="a blue circle\na green circle",
                       **{"Heat-map_word": "circle"})
    real = inputs(demo, "edit_real", Photo=handle_file(str(photo)), Steps=12, Target_prompts="a blue circle")
    requests = (("/edit", generated), ("/edit_real", real))
    alone = [Client(url, verbose=False).predict(*values, api_name=name) for name, values in requests]
    assert [shown[-1] for shown in alone] == ["", ""]
    clients, barrier = [Client(url, verbose=False) for _ in requests], threading.Barrier(len(requests))

    def send(client, name, values):
        barrier.wait()  # both leave together, as two tabs clicking Edit at once
        return client.predict(*values, api_name=name)

    with ThreadPoolExecutor(len(requests)) as pool:
        together = list(pool.map(send, clients, *zip(*requests)))
    for first, second in zip(alone, together):
        assert second[-1] == "", second[-1]
        assert len(pixels(second)) == len(pixels(first)) and len(second[1]) == len(first[1])
        for a, b in zip(pixels(first), pixels(second)):
            assert np.array_equal(a, b)  # the same images, pixel for pixel


REFUSED = [
    ("steps-cleared", {"Steps": None}, "steps is empty"),
    ("guidance-cleared", {"Guidance": None}, "guidance is empty"),
    ("seed-cleared", {"Seed": None}, "seed is empty"),
    ("seed-huge", {"Seed": 1e30}, "seed"),
    ("seed-negative", {"Seed": -1}, "seed -1"),
    ("seed-fraction", {"Seed": 0.5}, "whole number"),
    ("steps-text", {"Steps": "ten"}, "steps 'ten'"),
    ("steps-zero", {"Steps": 0}, "steps 0"),
    ("steps-huge", {"Steps": 100000}, "steps"),
    ("guidance-negative", {"Guidance": -1}, "guidance"),
    ("guidance-huge", {"Guidance": 1e308}, "guidance"),
    ("targets-too-many", {"Target_prompts": "\n".join(f"a circle {i}" for i in range(300))}, "300 target prompts"),
    ("option-out-of-range", {"Self-replace_steps": "0:7"}, "self-replace"),
]


@pytest.mark.parametrize("case_id,given,words", REFUSED, ids=[c[0] for c in REFUSED])
def test_a_value_the_page_can_send_is_refused_in_the_page(served, case_id, given, words):
    demo, url = served
    shown = Client(url, verbose=False).predict(*inputs(demo, "edit", **given), api_name="/edit")
    assert shown[-1].startswith("**freeprompt: error:** ") and "\n" not in shown[-1], shown[-1]
    assert words in shown[-1].lower()
    assert shown[0] == [] and shown[2] is None


# What gradio_client will not send but raw HTTP can: JSON's NaN and Infinity, lone surrogates, a list for a number.
RAW = [
    ("seed-nan", {"Seed": float("nan")}, "seed nan"),
    ("steps-infinity", {"Steps": float("inf")}, "steps inf"),
    ("guidance-nan", {"Guidance": float("nan")}, "guidance nan"),
    ("guidance-minus-infinity", {"Guidance": float("-inf")}, "guidance -inf"),
    ("steps-a-list", {"Steps": [1, 2]}, "steps [1, 2]"),
    ("source-lone-surrogate", {"Source_prompt": "a \ud800 circle"}, "not valid unicode"),
    ("targets-lone-surrogate", {"Target_prompts": "a \udfff circle"}, "not valid unicode"),
]


@pytest.mark.parametrize("case_id,given,words", RAW, ids=[c[0] for c in RAW])
def test_raw_http_values_are_refused_in_the_page(served, case_id, given, words):
    import httpx

    demo, url = served
    body = json.dumps({"data": inputs(demo, "edit", **given)})  # NaN, Infinity and \ud800 as Python writes them
    event = httpx.post(f"{url}gradio_api/call/edit", content=body, headers={"content-type": "application/json"})
    stream = httpx.get(f"{url}gradio_api/call/edit/{event.json()['event_id']}", timeout=120).text
    assert "event: complete" in stream, stream
    shown = json.loads(stream.split("event: complete", 1)[1].split("data:", 1)[1].strip().splitlines()[0])
    assert shown[-1].startswith("**freeprompt: error:** ") and "\n" not in shown[-1], shown[-1]
    assert words in shown[-1].lower()


def test_a_photo_edits_numbers_are_checked_too(served, photo):
    demo, url = served
    values = inputs(demo, "edit_real", Photo=handle_file(str(photo)), Steps=None)
    shown = Client(url, verbose=False).predict(*values, api_name="/edit_real")
    assert shown[-1].startswith("**freeprompt: error:** Steps is empty")
