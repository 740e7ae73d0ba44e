"""The demo page (`app.py`) in a real headless browser: Debian's chromium driven by selenium through chromedriver.

The page is served by `python app.py` in a subprocess on a free port of 127.0.0.1, on a tiny random model saved in a
temporary folder. The test uploads a picture, fills the post, the subject and the object, submits, waits for the
answer and checks it against the model's own prediction for the same input; a screenshot goes to the test's folder
and to `outputs/test-artifacts/app.png`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from _data_fixtures import make_processor
from PIL import Image, ImageDraw
from tiny_models import tiny_model_for, tiny_text_config

from analysis.explain import load
from mre_data.sample_data import SAMPLE_RELATIONS

pytest.importorskip("gradio", reason="the demo needs gradio: pip install -e '.[demo]'")
webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium: pip install selenium")

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1800",
)
# A loaded 2-core machine imports gradio and torch slowly; a start that fails ends the wait at once.
SERVER_START_TIMEOUT = 300.0
PAGE_TIMEOUT = 30.0
RESULT_TIMEOUT = 45.0
TEXT = "Photo : Alden with Corra Vane"
SUBJECT, OBJECT = "Alden", "Corra Vane"

pytestmark = [
    pytest.mark.slow,  # starts the demo server and drives a browser
    pytest.mark.skipif(
        not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()),
        reason="Debian's chromium and chromium-driver are not installed (apt-get install -y chromium chromium-driver)",
    ),
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny random HVFormer and its processor, saved as `run_mre.py` saves a trained one."""
    folder = tmp_path_factory.mktemp("model")
    processor = make_processor(tiny_text_config().max_position_embeddings, 2, ["None", *SAMPLE_RELATIONS])
    tiny_model_for(processor).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture
def picture(tmp_path) -> Path:
    image = Image.new("RGB", (96, 80), (90, 120, 160))
    draw = ImageDraw.Draw(image)
    draw.rectangle((8, 10, 40, 60), fill=(230, 200, 40))
    draw.ellipse((52, 20, 88, 70), fill=(200, 40, 60))
    path = tmp_path / "picture.png"
    image.save(path)
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_server(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"app.py exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    pytest.fail(f"app.py did not answer on {url} within {SERVER_START_TIMEOUT:.0f} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def server(model_dir, tmp_path):
    """`python app.py --model DIR --port PORT` (offline), stopped after the test."""
    port = free_port()
    log = tmp_path / "app.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "app.py", "--model", str(model_dir), "--port", str(port), "--device", "cpu"],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for_server(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def browser(tmp_path):
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(PAGE_TIMEOUT)
    driver.set_script_timeout(PAGE_TIMEOUT)
    try:
        yield driver
    finally:
        driver.quit()


def expected_relation(model_dir: Path, picture: Path) -> str:
    """What the model predicts for the page's input, computed directly."""
    model, processor = load(model_dir, "cpu")
    inputs = processor(text=TEXT, entities=[SUBJECT, OBJECT], images=Image.open(picture).convert("RGB"))
    with torch.no_grad():
        logits = model(**inputs).logits
    return model.config.id2label[int(logits[0].argmax())]


def test_demo_page_in_chromium(server, browser, model_dir, picture, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    browser.get(server)
    wait = WebDriverWait(browser, PAGE_TIMEOUT)
    wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "#image input[type=file]")))
    browser.find_element(By.CSS_SELECTOR, "#image input[type=file]").send_keys(str(picture))
    wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "#image img")))
    for elem_id, value in (("post", TEXT), ("subject", SUBJECT), ("object", OBJECT)):
        browser.find_element(By.CSS_SELECTOR, f"#{elem_id} textarea, #{elem_id} input").send_keys(value)
    browser.find_element(By.CSS_SELECTOR, "#submit").click()

    relation_box = browser.find_element(By.CSS_SELECTOR, "#relation textarea, #relation input")
    WebDriverWait(browser, RESULT_TIMEOUT).until(lambda _: relation_box.get_attribute("value"))
    WebDriverWait(browser, RESULT_TIMEOUT).until(
        lambda driver: driver.execute_script(
            "const image = document.querySelector('#maps img'); return image && image.complete && image.naturalWidth;"
        )
    )
    screenshot = tmp_path / "app.png"
    browser.save_screenshot(str(screenshot))
    artifacts = ROOT / "outputs" / "test-artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    shutil.copy(screenshot, artifacts / "app.png")

    assert relation_box.get_attribute("value") == expected_relation(model_dir, picture)
    maps_width = browser.execute_script("return document.querySelector('#maps img').naturalWidth;")
    assert maps_width > 600  # the explanation figure: picture, six maps, colour bar, expert weights
    uploaded = browser.execute_script("return document.querySelector('#image img').naturalWidth;")
    assert uploaded == 96  # the uploaded picture is shown as given
    table = browser.find_element(By.CSS_SELECTOR, "#experts").text
    experts = ["text only", "ViT level 0", "ViT level 1", "ViT level 2"]
    positions = [table.find(expert) for expert in experts]
    assert -1 not in positions and positions == sorted(positions), table
    with Image.open(screenshot) as shot:
        assert shot.size[0] >= 1000


def test_examples_fill_the_form_and_are_answered(server, browser, model_dir, tmp_path):
    """One click on an example fills the picture, the post and both entities with a post of the built-in sample, and
    the page answers it as the model does."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    import app

    picture, text, subject, obj = app.sample_examples()[1]
    browser.get(server)
    wait = WebDriverWait(browser, PAGE_TIMEOUT)
    wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "#examples")))
    rows = browser.find_elements(By.CSS_SELECTOR, "#examples tbody tr")
    assert len(rows) == 3 and text in rows[1].text
    rows[1].click()
    post = browser.find_element(By.CSS_SELECTOR, "#post textarea, #post input")
    wait.until(lambda _: post.get_attribute("value") == text)
    wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "#image img")))
    assert browser.find_element(By.CSS_SELECTOR, "#subject textarea, #subject input").get_attribute("value") == subject
    assert browser.find_element(By.CSS_SELECTOR, "#object textarea, #object input").get_attribute("value") == obj
    browser.find_element(By.CSS_SELECTOR, "#submit").click()
    relation_box = browser.find_element(By.CSS_SELECTOR, "#relation textarea, #relation input")
    WebDriverWait(browser, RESULT_TIMEOUT).until(lambda _: relation_box.get_attribute("value"))
    model, processor = load(model_dir, "cpu")
    inputs = processor(text=text, entities=[subject, obj], images=Image.open(picture).convert("RGB"))
    with torch.no_grad():
        expected = model.config.id2label[int(model(**inputs).logits[0].argmax())]
    assert relation_box.get_attribute("value") == expected
