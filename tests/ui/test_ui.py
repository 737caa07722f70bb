"""The web UI in a real browser: the app runs on a free local port, headless Chromium (Debian's package, driven by
playwright with ``executable_path``: no browser download) types prompts, presses Edit and checks what arrives; a
bad input shows the CLI's one-line message and the app keeps serving; a photo is edited. Screenshots are saved."""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio", reason="the web UI needs the ui extra (pip install 'freeprompt[ui]')")
playwright = pytest.importorskip("playwright.sync_api",
                                 reason="the browser test needs playwright (pip install playwright)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("the browser test needs Chromium (apt-get install chromium)", allow_module_level=True)
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = free_port()
    env = {**os.environ, "FREEPROMPT_CACHE": str(tmp_path_factory.mktemp("cache")), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "freeprompt", "ui", "--model", "shapes", "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the UI exited: {proc.stdout.read()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("the UI did not start within 180 s")
    yield f"http://127.0.0.1:{port}/"
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def page(server):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1600})
        page.goto(server, wait_until="networkidle")
        yield page
        browser.close()


def images_in(page, selector: str) -> list[bytes]:
    sources = page.eval_on_selector_all(f"{selector} img", "els => els.map(e => e.src)")
    return [page.request.get(src).body() for src in sources]


def fill(page, label: str, value: str, index: int = 0) -> None:
    page.get_by_label(label, exact=True).nth(index).fill(value)


def test_generated_edit_shows_source_targets_and_heat_maps(page, tmp_path):
    fill(page, "Source prompt", "a red circle")
    fill(page, "Target prompts (one per line)", "a blue circle\na green circle")
    fill(page, "Steps", "10")
    fill(page, "Heat-map word (optional)", "circle")
    page.locator("#edit").click()
    page.wait_for_function("document.querySelectorAll('#gallery img').length >= 3", timeout=120000)
    shots = Path(os.environ.get("FREEPROMPT_SCREENSHOTS", tmp_path))
    page.screenshot(path=str(shots / "ui-generated.png"), full_page=True)
    pictures = images_in(page, "#gallery")
    assert len(pictures) == 3 and len(set(pictures)) == 3  # source and two targets, all different
    arrays = [np.asarray(Image.open(__import__("io").BytesIO(b)).convert("RGB")) for b in pictures]
    assert np.abs(arrays[1].astype(int) - arrays[2].astype(int)).mean() > 1  # the targets differ
    assert page.locator("#heatmaps img").count() == 3
    assert "denoise_s" in page.locator("#timings textarea").input_value()


def test_bad_input_shows_the_one_line_message_and_the_app_keeps_serving(page, tmp_path):
    fill(page, "Target prompts (one per line)", "")
    page.locator("#edit").click()
    page.wait_for_function("document.querySelector('#error').innerText.includes('no target prompt')", timeout=60000)
    fill(page, "Target prompts (one per line)", "a yellow circle")
    fill(page, "Self-replace steps (FPE)", "0.9:0.2")
    page.locator("#edit").click()
    page.wait_for_function("document.querySelector('#error').innerText.includes('starts after it ends')",
                           timeout=60000)
    assert "Traceback" not in page.content()
    fill(page, "Self-replace steps (FPE)", "0:0.8")
    page.locator("#edit").click()
    page.wait_for_function("document.querySelectorAll('#gallery img').length == 2 && "
                           "!document.querySelector('#error').innerText.includes('error')", timeout=120000)


def test_cleared_and_out_of_range_numbers_show_the_one_line_message(page):
    fill(page, "Target prompts (one per line)", "a blue circle")
    for label, value, message in (("Steps", "", "Steps is empty"), ("Guidance", "", "Guidance is empty"),
                                  ("Seed", "1e30", "Seed 1e+30 is outside 0..9223372036854775807"),
                                  ("Seed", "-1", "Seed -1 is outside"), ("Seed", "", "Seed is empty")):
        fill(page, "Steps", "10")
        fill(page, "Guidance", "7.5")
        fill(page, "Seed", "0")
        fill(page, label, value)
        page.locator("#edit").click()
        page.wait_for_function(f"document.querySelector('#error').innerText.includes({message!r})", timeout=60000)
        assert page.locator("#error").inner_text().strip().count("\n") == 0
    assert "Traceback" not in page.content()
    fill(page, "Seed", "3")
    page.locator("#edit").click()
    page.wait_for_function("document.querySelectorAll('#gallery img').length == 2 && "
                           "!document.querySelector('#error').innerText.includes('error')", timeout=120000)


def test_real_image_edit_and_a_non_image_upload(page, tmp_path):
    from freeprompt.shapes import world

    page.get_by_role("tab", name="Real image").click()
    fake = tmp_path / "notes.png"
    fake.write_text("not an image")
    page.locator("input[type=file][accept='image/*']").set_input_files(str(fake))
    fill(page, "Target prompts (one per line)", "a blue circle", index=1)
    fill(page, "Steps", "10", index=1)
    page.locator("#edit-real").click()
    page.wait_for_function("document.querySelector('#error').innerText.includes('not an image')", timeout=60000)
    photo = tmp_path / "photo.png"
    Image.fromarray(world.random_sample(3, size=64, color="red", shape="circle").image).save(photo)
    page.locator("button[aria-label='Clear']").first.click()  # the upload area comes back
    page.locator("input[type=file][accept='image/*']").set_input_files(str(photo))
    page.locator("#edit-real").click()
    page.wait_for_function("document.querySelectorAll('#gallery img').length == 2 && "
                           "!document.querySelector('#error').innerText.includes('error')", timeout=120000)
    shots = Path(os.environ.get("FREEPROMPT_SCREENSHOTS", tmp_path))
    page.screenshot(path=str(shots / "ui-real.png"), full_page=True)
