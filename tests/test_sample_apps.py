"""The sample apps as users run them: real subprocesses, the real reference model, a real video,
and the kiosk page in a real headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from conftest import ARTIFACTS, ROOT
from shoplens.colour import PALETTE

KIOSK = ROOT / "sample_apps" / "kiosk" / "app.py"
SNAP = ROOT / "sample_apps" / "snap_search" / "app.py"


@pytest.fixture(scope="session")
def reference_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference model converted to int8 with its embedding model, as 'make demo' does."""
    from shoplens_convert import ConvertOptions, convert

    out = tmp_path_factory.mktemp("ref") / "model"
    opts = ConvertOptions(
        recipe="int8", calib_data="fashion-mnist:train:200", embedding="auto", latency_runs=0
    )
    convert(ROOT / "sample_apps" / "reference_model" / "product_cnn.keras", opts).save(out)
    assert (out / "embedding.tflite").is_file()
    return out


@pytest.fixture(scope="module")
def kiosk_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from shoplens.data.fashion_mnist import FASHION_MNIST_LABELS, load_fashion_mnist
    from shoplens.data.kiosk import KioskConfig, generate_kiosk

    x, y = load_fashion_mnist("test")
    out = tmp_path_factory.mktemp("kiosk_video")
    generate_kiosk(out, x, y.tolist(), FASHION_MNIST_LABELS, n_frames=240, seed=7, video=True,
                   segment_frames=30, config=KioskConfig(bad_fraction=0.25))  # fmt: skip
    reasons = {r["bad_reason"] for r in _ground_truth(out)}
    assert "blur" in reasons, reasons  # seed 7 gives a blurred and an overexposed segment
    return out


@pytest.fixture(scope="module")
def demo_index(reference_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from shoplens.catalog import build_index
    from shoplens.data.catalog_gen import generate_catalog

    work = tmp_path_factory.mktemp("kiosk_index")
    generate_catalog(work / "catalog", count=800, split="train")
    build_index(work / "catalog" / "products.csv", reference_models / "embedding.tflite", work / "index")
    return work / "index"


def _ground_truth(video_dir: Path) -> list[dict[str, str]]:
    import csv

    with (video_dir / "ground_truth.csv").open() as fh:
        return list(csv.DictReader(fh))


def _start(args: list[str]) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    p = subprocess.Popen([sys.executable, str(KIOSK), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env, cwd=ROOT)  # fmt: skip
    assert p.stderr is not None
    line = p.stderr.readline()
    m = re.search(r"http://[\d.]+:\d+/", line)
    if not m:
        p.kill()
        raise AssertionError(f"no URL from the kiosk app: {line!r} {p.stderr.read()}")
    return p, m.group(0)


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _stop(p: subprocess.Popen) -> int:
    p.send_signal(signal.SIGTERM)
    try:
        return p.wait(timeout=15)
    except subprocess.TimeoutExpired:
        p.kill()
        raise


# everything the test reads from the kiosk page, in one evaluation: the page redraws every 200 ms,
# and separate reads could mix two states
SNAPSHOT = """() => {
  const $ = (id) => document.getElementById(id);
  return [$('source-frame').textContent, $('label').innerText, $('prompt').innerText,
          document.body.dataset.answer, [...document.querySelectorAll('#top3 li')].map(li => li.innerText),
          $('last').innerText,
          [...document.querySelectorAll('#colours .colour')]
            .map(c => [c.innerText, c.querySelector('i').style.background])];
}"""


def test_kiosk_page_in_chromium(reference_models: Path, kiosk_video: Path, demo_index: Path, browser) -> None:
    index = None
    truth = _ground_truth(kiosk_video)
    model, video = str(reference_models / "model.tflite"), str(kiosk_video / "kiosk.avi")
    p, url = _start(["--model", model, "--source", video,
                     "--port", "0", "--threads", "1", "--index", str(demo_index)])  # fmt: skip
    try:
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        page.goto(url)
        page.wait_for_function("document.getElementById('label').textContent !== '…'", timeout=30_000)
        good, correct, blur_prompts, bright_prompts, colour_chips = 0, 0, 0, 0, 0
        states: dict[str, int] = {}
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        t_end = time.time() + 24  # the 240-frame video plays in 16 s at 15 fps
        while time.time() < t_end:
            # one snapshot of the page (the poll may redraw it between separate reads)
            sf, label, prompt, answer, top3, last, chips = page.evaluate(SNAPSHOT)
            if answer not in states:  # one screenshot per state the page shows
                page.screenshot(path=str(ARTIFACTS / f"kiosk_{answer}.png"), full_page=True)
            states[answer] = states.get(answer, 0) + 1
            if answer in ("retake", "not_sure"):  # never the previous item's label as the current one
                assert label in ("", "Not sure") and not top3, (label, answer, top3)
                assert last == "" or last.startswith("last item: "), last
            if answer == "confident":  # the top 3 leads with the headline (one source per frame)
                assert top3 and top3[0].startswith(label), (label, top3)
            if sf.lstrip("-").isdigit() and int(sf) >= 0:
                row = truth[int(sf)]
                offset = int(sf) % 30
                if row["bad_reason"] == "blur" and prompt == "hold the item still":
                    blur_prompts += 1
                if row["bad_reason"] == "overexposed" and prompt.startswith("too bright"):
                    bright_prompts += 1
                if not row["bad_reason"] and offset >= 12 and not prompt:
                    good += 1
                    correct += label == row["label_name"]
                    if chips:  # the product's colours: a palette name and a swatch each
                        colour_chips += 1
                        name, swatch = chips[0]
                        assert name.split()[0] in PALETTE and swatch != "", chips
                if prompt:
                    assert not chips  # no colour on a re-take or a "not sure"
                if blur_prompts and good >= 8 and index is None and not prompt:
                    index = page.screenshot(path=str(ARTIFACTS / "kiosk_page.png"), full_page=True)
            time.sleep(0.25)
        assert blur_prompts >= 1, "the blurred segment never showed the re-take prompt"
        assert states.get("confident", 0) >= 8 and states.get("retake", 0) >= 1, states
        assert states.get("not_sure", 0) >= 1, states  # a third of good frames score under 0.85
        assert good >= 8 and correct / good >= 0.6, (correct, good)
        assert colour_chips >= good // 2, (colour_chips, good)
        # the page shows top 3 only for a confident frame: wait for one (the frame at this instant may
        # be a re-take or a "not sure", which rightly shows none)
        page.wait_for_function("document.querySelectorAll('#top3 li').length > 0", timeout=15000)
        assert page.locator("#top3 li").count() == 3
        thumbs = page.locator("#similar img")
        assert thumbs.count() == 4
        assert all(thumbs.nth(i).evaluate("img => img.complete && img.naturalWidth === 96") for i in range(4))
        assert float(page.text_content("#fps") or 0) > 5  # operator figures, behind the toggle
        assert not page.is_visible("#fps")
        assert all("SL-" not in thumbs.nth(i).get_attribute("alt") for i in range(4))  # names, not ids
        if index is None:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "kiosk_page.png"), full_page=True)
        status, health = _get(url + "healthz")
        assert status == 200 and health["ok"] and health["camera"] == "ok"
        assert health["cpu_kernels"] in ("xnnpack", "builtin")  # what --cpu-kernels auto chose at start
        status, res = _get(url + "api/result")
        assert status == 200 and {"label", "score", "top3", "prompt", "fps", "latency_ms"} <= set(res)
        with urllib.request.urlopen(url + "frame.jpg", timeout=5) as r:
            assert r.headers["Content-Type"] == "image/jpeg" and r.read(2) == b"\xff\xd8"
        page.close()
    finally:
        rc = _stop(p)
    assert rc == 0, p.stderr.read() if p.stderr else ""


def test_kiosk_without_a_camera_says_so_once(reference_models: Path) -> None:
    """A camera index with no camera: one ShopLens line, then the retry loop (no OpenCV noise)."""
    import signal

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    p = subprocess.Popen([sys.executable, str(KIOSK), "--model", str(reference_models / "model.tflite"),
                          "--source", "7", "--headless"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env, cwd=ROOT)  # fmt: skip
    time.sleep(5)  # a few retries
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=30)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines[0] == "camera 7 unavailable; retrying every second (Ctrl-C to stop)", err
    assert len(lines) == 2 and lines[1].startswith("kiosk stopped: 0 frames read"), err


def test_kiosk_survives_a_camera_that_stops(
    reference_models: Path, kiosk_video: Path, tmp_path: Path, browser
) -> None:
    video = tmp_path / "cam.avi"
    shutil.copyfile(kiosk_video / "kiosk.avi", video)
    p, url = _start(["--model", str(reference_models / "model.tflite"), "--source", str(video), "--port", "0",
                     "--fast", "--threads", "1"])  # fmt: skip
    try:
        deadline = time.time() + 20
        while time.time() < deadline and _get(url + "api/result")[1].get("label") is None:
            time.sleep(0.2)
        hidden = tmp_path / "gone.avi"
        video.rename(hidden)  # the camera disappears
        deadline = time.time() + 20
        status = 0
        while time.time() < deadline:
            status, health = _get(url + "healthz")
            if status == 503:
                break
            time.sleep(0.2)
        assert status == 503 and health["camera"] == "camera unavailable"
        assert p.poll() is None  # still running
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        page.goto(url)
        page.wait_for_function("document.body.dataset.answer === 'no_camera'", timeout=10_000)
        assert page.is_visible("#nocam") and not page.is_visible("#frame")  # no broken-image icon
        assert page.inner_text("#label") == "" and _get(url + "api/result")[1]["label"] is None
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "kiosk_no_camera.png"), full_page=True)
        page.close()
        hidden.rename(video)  # and comes back
        deadline = time.time() + 20
        while time.time() < deadline:
            status, health = _get(url + "healthz")
            if status == 200:
                break
            time.sleep(0.2)
        assert status == 200 and health["camera"] == "ok"
    finally:
        rc = _stop(p)
    assert rc == 0


def test_kiosk_headless_json_lines(reference_models: Path, kiosk_video: Path) -> None:
    # paced at the video's frame rate, as a camera would deliver it (16 s): with --fast the live
    # stream drops whatever arrives while it is busy, so the count would measure the machine's load
    model = str(reference_models / "model.tflite")
    p = subprocess.run([sys.executable, str(KIOSK), "--model", model, "--source",
                        str(kiosk_video / "kiosk.avi"), "--headless", "--once"],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)  # fmt: skip
    assert p.returncode == 0, p.stderr
    lines = [json.loads(x) for x in p.stdout.splitlines()]
    assert len(lines) >= 100
    assert any(x["rejected"] and x["quality"]["hint"] for x in lines)
    assert all("source_frame" in x and "timing_ms" in x for x in lines)
    assert "240 frames read" in p.stderr
    p = subprocess.run([sys.executable, str(KIOSK), "--model", "nope.tflite"], capture_output=True, text=True,
                       timeout=60, cwd=ROOT)  # fmt: skip
    assert p.returncode == 2 and p.stderr.startswith("error: model nope.tflite does not exist")


def test_snap_search(reference_models: Path, tmp_path: Path, fmnist_test) -> None:
    import cv2

    x, _ = fmnist_test
    photo = tmp_path / "photo.png"
    cv2.imwrite(
        str(photo), cv2.resize(x[2], (224, 224), interpolation=cv2.INTER_CUBIC)
    )  # a trouser, upscaled
    work = tmp_path / "snap"
    cmd = [sys.executable, str(SNAP), str(photo), "--models", str(reference_models), "--work", str(work),
           "--catalog-size", "1500", "--json"]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["quality"]["ok"] and d["category"] == "Trouser"
    assert len(d["similar"]) == 5 and {s["category"] for s in d["similar"]} == {"Trouser"}
    assert all(s["id"].startswith("SL-") and s["price"] > 0 for s in d["similar"])
    blurred = tmp_path / "blurred.png"
    cv2.imwrite(str(blurred), cv2.GaussianBlur(cv2.resize(x[2], (224, 224)), (0, 0), 9))
    p = subprocess.run(
        [*cmd[:2], str(blurred), *cmd[3:]], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert p.returncode == 3, p.stderr
    d = json.loads(p.stdout)
    assert not d["quality"]["ok"] and d["retake"] == "hold the item still" and d["similar"] == []
    assert d["colours"] == [] and d["same_colour"] == [] and not d["not_a_product"]
    # colour noise passes the quality gate, but is no product (top-1 about 0.24, under 0.38)
    noise = tmp_path / "noise.png"
    cv2.imwrite(str(noise), np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8))
    run = {"capture_output": True, "text": True, "timeout": 300, "cwd": ROOT}
    p = subprocess.run([*cmd[:2], str(noise), *cmd[3:]], **run)  # type: ignore[call-overload]
    assert p.returncode == 3, p.stderr
    d = json.loads(p.stdout)
    assert d["quality"]["ok"] and d["not_a_product"] and d["category"] is None and d["similar"] == []
    p = subprocess.run([*cmd[:2], str(noise), *cmd[3:-1]], **run)  # type: ignore[call-overload]
    assert p.returncode == 3 and p.stdout.startswith("No product recognised"), p.stdout
    # a red trouser on a light background: similar products in the same colour
    from shoplens.data.colour_set import paint

    red = paint(x[2], "red", np.random.default_rng(1)).astype(np.float32)
    big = cv2.resize(red, (224, 224), interpolation=cv2.INTER_CUBIC)
    alpha = np.clip(big[:, :, 3:] / 255.0, 0, 1)
    photo_red = tmp_path / "red.png"
    cv2.imwrite(str(photo_red), (big[:, :, :3] * alpha + 238 * (1 - alpha)).astype(np.uint8))
    p = subprocess.run([*cmd[:2], str(photo_red), *cmd[3:]], capture_output=True, text=True, timeout=300,
                       cwd=ROOT)  # fmt: skip
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["colours"][0]["name"] == "red"
    assert d["same_colour"] and all(s["attributes"]["colour"] == "red" for s in d["same_colour"])
    assert np.isclose(len(list((work / "catalog" / "images").iterdir())), 1500)
