"""shoplens.Classifier on real TFLite models converted from a small CNN trained in a fixture."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from shoplens import (
    BaseOptions,
    Classifier,
    ClassifierOptions,
    ClassifierPool,
    ImageClassifierOptions,
    RunningMode,
    SmoothingOptions,
)
from shoplens.contract import PreprocessContract
from shoplens.data import load_fashion_mnist, render_scene
from shoplens.errors import DataError, DelegateUnavailableError, InvalidFrameError, ModelError, UsageError
from shoplens.postprocess import dequantize
from shoplens.quality import QualityOptions


@pytest.fixture(scope="module")
def test_images() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_fashion_mnist("test")
    return x[:400], y[:400].astype(np.int64)


def _opts(path: Path, **kw) -> ImageClassifierOptions:
    base = {k: kw.pop(k) for k in list(kw) if k in BaseOptions.__dataclass_fields__}
    return ImageClassifierOptions(BaseOptions(model_asset_path=path, **base), **kw)


def _keras_top1(tiny_rgb, images: np.ndarray) -> np.ndarray:
    import keras

    from shoplens.preprocess import preprocess_batch

    model = keras.saving.load_model(tiny_rgb["keras"])
    c = PreprocessContract.load(tiny_rgb["keras"].parent / "contract.json")
    return np.argmax(model.predict(preprocess_batch(images, c), verbose=0), axis=1)


def test_reads_labels_and_contract_from_metadata(tiny_rgb) -> None:
    with Classifier.create_from_model_path(tiny_rgb["int8"]) as clf:
        assert clf.labels[0] == "T-shirt/top" and len(clf.labels) == 10
        assert clf.contract.size == (32, 32) and clf.contract.value_range == (0.0, 1.0)
        r = repr(clf)
        assert "10 classes" in r and "uint8[1, 32, 32, 3]" in r and "ai_edge_litert" in r and "IMAGE" in r
    assert "closed" in repr(clf)
    with pytest.raises(UsageError, match="closed"):
        clf.classify(np.zeros((32, 32, 3), np.uint8))


@pytest.mark.parametrize("kind", ["f32", "int8", "int8io"])
def test_matches_the_keras_model(tiny_rgb, test_images, kind: str) -> None:
    """The SDK path (preprocess into the buffer, invoke, dequantize) agrees with Keras."""
    x, y = test_images
    ref = _keras_top1(tiny_rgb, x)
    with Classifier.create_from_model_path(
        tiny_rgb[kind], classifier_options=ClassifierOptions(max_results=10)
    ) as clf:
        results = clf.classify_batch(list(x))
    got = np.array([r.top.index for r in results])
    assert np.mean(got == ref) >= (0.999 if kind == "f32" else 0.97)
    assert np.mean(got == y) > 0.6
    for r in results[:20]:
        scores = [c.score for c in r.categories]
        assert len(scores) == 10 and scores == sorted(scores, reverse=True)
        assert 0.97 < sum(scores) < 1.03 and all(0 <= s <= 1 for s in scores)
        assert r.timing.invoke_ms > 0 and r.timing.total_ms >= r.timing.invoke_ms


def test_logits_model_gets_softmax(tiny_rgb, test_images) -> None:
    x, _ = test_images
    with Classifier.create_from_model_path(
        tiny_rgb["logits"], classifier_options=ClassifierOptions(10)
    ) as clf:
        assert clf.outputs_logits
        r = clf.classify(x[0])
    assert abs(sum(c.score for c in r.categories) - 1.0) < 1e-6


def test_model_without_metadata(tiny_rgb, test_images) -> None:
    x, _ = test_images
    with pytest.raises(ModelError, match="carries no preprocessing contract"):
        Classifier.create_from_model_path(tiny_rgb["nometa"])
    c = PreprocessContract.from_range(32, 32, 0.0, 1.0)
    with Classifier.create_from_model_path(tiny_rgb["nometa"], contract=c) as clf:
        assert clf.labels == tuple(str(i) for i in range(10))  # no labels anywhere: indices
        ref = Classifier.create_from_model_path(tiny_rgb["int8"])
        assert clf.classify(x[1]).top.index == ref.classify(x[1]).top.index
    sidecar = tiny_rgb["nometa"].parent / "labels.txt"
    sidecar.write_text("\n".join(f"item{i}" for i in range(10)) + "\n")
    try:
        with Classifier.create_from_model_path(tiny_rgb["nometa"], contract=c) as clf:
            assert clf.labels[3] == "item3"
        sidecar.write_text("a\nb\n")
        with pytest.raises(DataError, match="list 2 names but the model outputs 10"):
            Classifier.create_from_model_path(tiny_rgb["nometa"], contract=c)
    finally:
        sidecar.unlink()
    with pytest.raises(ModelError, match="contract says 64x64x3"):
        Classifier.create_from_model_path(tiny_rgb["nometa"], contract=PreprocessContract(64, 64))


def test_model_from_bytes(tiny_rgb, test_images) -> None:
    x, _ = test_images
    opts = ImageClassifierOptions(BaseOptions(model_asset_buffer=tiny_rgb["int8"].read_bytes()))
    with Classifier.create_from_options(opts) as clf:
        assert clf.classify(x[0]).top is not None


def test_frame_kinds_agree(tiny_rgb) -> None:
    x, _ = load_fashion_mnist("test")
    frame = render_scene(x[5], np.random.default_rng(5))
    with Classifier.create_from_model_path(tiny_rgb["int8"], classifier_options=ClassifierOptions(10)) as clf:
        bgr = clf.classify(frame)
        bgra = clf.classify(cv2.cvtColor(frame, cv2.COLOR_BGR2BGRA))
        flt = clf.classify(frame.astype(np.float32) / 255.0)
        gray = clf.classify(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
    with Classifier.create_from_model_path(
        tiny_rgb["int8"], input_color_order="RGB", classifier_options=ClassifierOptions(10)
    ) as rgb_clf:
        rgb = rgb_clf.classify(np.ascontiguousarray(frame[:, :, ::-1]))
    assert bgr.categories == bgra.categories == rgb.categories
    assert flt.top.index == bgr.top.index
    assert gray.top is not None


@pytest.mark.parametrize(
    "frame, msg",
    [
        (None, "camera read failed"),
        (np.zeros((0, 0, 3), np.uint8), "empty"),
        (np.zeros(64, np.uint8), "1-D"),
        (np.zeros((32, 32, 2), np.uint8), "2 channels"),
        (np.zeros((32, 32, 5), np.uint8), "5 channels"),
        (np.zeros((32, 32, 3), np.uint16), "uint16"),
        (np.full((32, 32, 3), np.inf, np.float32), "NaN or inf"),
        (np.zeros((5, 5), np.uint8), "at least 8x8"),
    ],
)
def test_invalid_frames(tiny_rgb, frame, msg: str) -> None:
    with Classifier.create_from_model_path(tiny_rgb["int8"]) as clf:
        with pytest.raises(InvalidFrameError, match=msg):
            clf.classify(frame)
        assert clf.classify(np.zeros((40, 40, 3), np.uint8)).top is not None  # still usable


def test_classifier_options(tiny_rgb, test_images) -> None:
    x, _ = test_images
    path = tiny_rgb["int8"]
    with Classifier.create_from_model_path(path, classifier_options=ClassifierOptions(max_results=2)) as clf:
        full = clf.classify(x[0])
    assert len(full.categories) == 2
    with Classifier.create_from_model_path(
        path, classifier_options=ClassifierOptions(10, score_threshold=0.2)
    ) as clf:
        assert all(c.score >= 0.2 for c in clf.classify(x[0]).categories)
    allow = ("Bag", "Trouser")
    with Classifier.create_from_model_path(
        path, classifier_options=ClassifierOptions(10, category_allowlist=allow)
    ) as c:
        assert {cat.label for cat in c.classify(x[0]).categories} <= set(allow)
    top = full.top.label
    with Classifier.create_from_model_path(
        path, classifier_options=ClassifierOptions(10, category_denylist=(top,))
    ) as c:
        labels = [cat.label for cat in c.classify(x[0]).categories]
        assert top not in labels and len(labels) == 9
    with pytest.raises(UsageError, match="not one of the model's labels"):
        Classifier.create_from_model_path(
            path, classifier_options=ClassifierOptions(category_allowlist=("Hat",))
        )
    for kwargs, msg in [
        ({"max_results": 0}, "max_results"),
        ({"score_threshold": 1.5}, "score_threshold"),
        ({"category_allowlist": ("Bag",), "category_denylist": ("Coat",)}, "mutually exclusive"),
    ]:
        with pytest.raises(UsageError, match=msg):
            ClassifierOptions(**kwargs)


def test_option_validation(tiny_rgb) -> None:
    p = tiny_rgb["int8"]
    with pytest.raises(UsageError, match="exactly one"):
        BaseOptions()
    with pytest.raises(UsageError, match="num_threads"):
        BaseOptions(model_asset_path=p, num_threads=0)
    with pytest.raises(UsageError, match="delegates"):
        BaseOptions(model_asset_path=p, delegate="gpu")
    with pytest.raises(UsageError, match="needs a result_callback"):
        _opts(p, running_mode="live_stream")
    with pytest.raises(UsageError, match="only used in LIVE_STREAM"):
        _opts(p, result_callback=lambda *a: None)
    with pytest.raises(UsageError, match="roi"):
        _opts(p, roi=(0, 0, 0, 10))
    with pytest.raises(UsageError):
        _opts(p, crop="zoom")
    with pytest.raises(ModelError, match="does not exist"):
        Classifier.create_from_model_path(p.parent / "missing.tflite")
    with pytest.raises(UsageError, match="unknown Edge TPU device 'bluetooth'"):
        BaseOptions(model_asset_path=p, device="bluetooth", delegate="edgetpu")


def test_roi_and_crop_override(tiny_rgb) -> None:
    x, _ = load_fashion_mnist("test")
    canvas = np.zeros((240, 320, 3), np.uint8)
    item = cv2.cvtColor(cv2.resize(x[7], (96, 96)), cv2.COLOR_GRAY2BGR)
    canvas[20:116, 200:296] = item
    with Classifier.create_from_model_path(tiny_rgb["int8"], roi=(200, 20, 96, 96)) as clf:
        in_roi = clf.classify(canvas)
    with Classifier.create_from_model_path(tiny_rgb["int8"]) as clf:
        alone = clf.classify(item)
    assert in_roi.categories == alone.categories
    with Classifier.create_from_model_path(tiny_rgb["int8"], crop="stretch") as clf:
        assert clf.contract.crop.value == "stretch"


def test_mode_misuse_names_the_mode(tiny_rgb) -> None:
    frame = np.zeros((32, 32, 3), np.uint8)
    with Classifier.create_from_model_path(tiny_rgb["int8"]) as clf:
        with pytest.raises(UsageError, match="for VIDEO mode, but this Classifier runs in IMAGE mode"):
            clf.classify_for_video(frame, 0)
        with pytest.raises(UsageError, match="LIVE_STREAM"):
            clf.classify_async(frame, 0)
    with (
        Classifier.create_from_model_path(tiny_rgb["int8"], running_mode="video") as clf,
        pytest.raises(UsageError, match="IMAGE mode"),
    ):
        clf.classify(frame)


def test_video_mode_smooths_and_requires_increasing_timestamps(tiny_rgb) -> None:
    x, y = load_fashion_mnist("test")
    a, b = (int(i) for i in (np.flatnonzero(y == 1)[0], np.flatnonzero(y == 8)[0]))  # trouser, bag
    # a trouser, with every third frame replaced by a bag (a flicker the display should not show)
    frames = [x[b] if i % 3 == 2 else x[a] for i in range(30)]
    with Classifier.create_from_model_path(tiny_rgb["int8"]) as raw_clf:
        raw = [raw_clf.classify(f).top.label for f in frames]
    smooth_opts = SmoothingOptions(alpha=0.4, hysteresis=0.1)
    with Classifier.create_from_model_path(
        tiny_rgb["int8"], running_mode="video", smoothing=smooth_opts
    ) as clf:
        smooth = [clf.classify_for_video(f, 33 * i).top.label for i, f in enumerate(frames)]
        with pytest.raises(UsageError, match="timestamps must increase"):
            clf.classify_for_video(frames[0], 33 * 29)
        # after a long gap the smoother starts afresh: the bag shows at once
        assert clf.classify_for_video(x[b], 33 * 29 + 5000).top.label == "Bag"

    def changes(seq: list[str]) -> int:
        return sum(p != q for p, q in itertools.pairwise(seq))

    assert changes(raw) >= 15
    assert changes(smooth) <= 1 and smooth[-1] == "Trouser"


def test_quality_gate(tiny_rgb) -> None:
    x, _ = load_fashion_mnist("test")
    good = render_scene(x[0], np.random.default_rng(0))
    dark = render_scene(x[0], np.random.default_rng(0), bad="dark")
    blurry = render_scene(x[0], np.random.default_rng(0), bad="blur")
    with Classifier.create_from_model_path(tiny_rgb["int8"], quality=QualityOptions(policy="reject")) as clf:
        ok = clf.classify(good)
        d = clf.classify(dark)
        b = clf.classify(blurry)
        tiny = clf.classify(np.full((20, 20, 3), 128, np.uint8))
    assert ok.quality.ok and ok.top is not None
    assert d.rejected and d.quality.reasons == ("dark",) and d.quality.hint == "more light" and d.top is None
    assert b.rejected and b.quality.hint == "hold the item still"
    assert tiny.rejected and "small" in tiny.quality.reasons
    with Classifier.create_from_model_path(tiny_rgb["int8"], quality=QualityOptions(policy="warn")) as clf:
        w = clf.classify(dark)
    assert not w.quality.ok and w.top is not None  # classified anyway, verdict attached
    with Classifier.create_from_model_path(tiny_rgb["int8"]) as clf:
        assert np.isnan(clf.classify(dark).quality.brightness)  # policy off: not measured
    with pytest.raises(UsageError, match="policy"):
        QualityOptions(policy="strict")


def test_eight_threads_share_one_classifier(tiny_rgb) -> None:
    x, _ = load_fashion_mnist("test")
    frames = [x[i] for i in range(250)]
    with Classifier.create_from_model_path(tiny_rgb["int8"], classifier_options=ClassifierOptions(3)) as clf:
        expected = [clf.classify(f).categories for f in frames]
        results: dict[int, list] = {}

        def work(k: int) -> None:
            results[k] = [clf.classify(f).categories for f in frames]

        threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sum(len(v) for v in results.values()) == 2000
    assert all(v == expected for v in results.values())


def test_classifier_pool(tiny_rgb) -> None:
    x, _ = load_fashion_mnist("test")
    with Classifier.create_from_model_path(tiny_rgb["int8"]) as single:
        expected = [single.classify(x[i]).categories for i in range(40)]
    with ClassifierPool(_opts(tiny_rgb["int8"]), 3) as pool:
        assert len(pool) == 3
        out: list = [None] * 40

        def work(i: int) -> None:
            out[i] = pool.classify(x[i]).categories

        threads = [threading.Thread(target=work, args=(i,)) for i in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert out == expected
    with pytest.raises(UsageError, match="pool size"):
        ClassifierPool(_opts(tiny_rgb["int8"]), 0)


def test_edgetpu_delegate_missing_and_fallback(tiny_rgb) -> None:
    """libedgetpu is not installed here: a clear error, or CPU when fallback_to_cpu=True."""
    with pytest.raises(DelegateUnavailableError, match="libedgetpu"):
        Classifier(_opts(tiny_rgb["int8"], delegate="edgetpu", device="usb"))
    with Classifier(_opts(tiny_rgb["int8"], delegate="edgetpu", fallback_to_cpu=True)) as clf:
        assert clf.delegate == "cpu" and "fell back" in repr(clf)


def test_edgetpu_compiled_model_on_cpu_is_a_clear_error(tiny_rgb, tmp_path: Path) -> None:
    """A model holding edgetpu-custom-op (made by renaming an op, as the compiler would) on CPU."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    m = schema.ModelT.InitFromPackedBuf(bytearray(tiny_rgb["int8"].read_bytes()), 0)
    oc = m.operatorCodes[0]
    oc.builtinCode = schema.BuiltinOperator.CUSTOM
    oc.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    oc.customCode = "edgetpu-custom-op"
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    p = tmp_path / "model_edgetpu.tflite"
    p.write_bytes(bytes(b.Output()))
    with pytest.raises(ModelError, match="compiled for the Edge TPU"):
        Classifier.create_from_model_path(p)


def test_tensorflow_backend_matches_litert(tiny_rgb, test_images) -> None:
    x, _ = test_images
    with Classifier.create_from_model_path(tiny_rgb["int8"], backend="tensorflow") as tf_clf:
        assert tf_clf.backend == "tensorflow"
        a = [tf_clf.classify(f).categories for f in x[:30]]
    with Classifier.create_from_model_path(tiny_rgb["int8"]) as lite:
        b = [lite.classify(f).categories for f in x[:30]]
    assert a == b


def test_corrupt_models_are_model_errors(tiny_rgb, tmp_path: Path) -> None:
    data = tiny_rgb["int8"].read_bytes()
    cases = {
        "empty.tflite": b"",
        "short.tflite": data[:100],
        "half.tflite": data[: len(data) // 2],
        "text.tflite": b"hello world, not a model at all",
    }
    for name, blob in cases.items():
        p = tmp_path / name
        p.write_bytes(blob)
        with pytest.raises(ModelError):
            Classifier.create_from_model_path(p)


def test_dequantize_through_int64() -> None:
    q = np.array([0, 128, 255], np.uint8)
    np.testing.assert_allclose(dequantize(q, 0.5, 128), [-64.0, 0.0, 63.5])  # uint8 arithmetic would wrap
    np.testing.assert_allclose(dequantize(np.array([-128, 127], np.int8), 1.0, -128), [0.0, 255.0])
    np.testing.assert_array_equal(dequantize(np.array([0.25]), None), [0.25])


def test_running_mode_enum() -> None:
    assert RunningMode("live_stream") is RunningMode.LIVE_STREAM


def test_no_interpreter_installed_names_the_install_command(tiny_rgb) -> None:
    """With every TFLite package unimportable, the error says what to install (subprocess)."""
    import subprocess
    import sys

    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("ai_edge_litert", "tflite_runtime", "tensorflow"):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
from shoplens.classifier import Classifier
from shoplens.errors import BackendUnavailableError
try:
    Classifier.create_from_model_path({str(tiny_rgb["int8"])!r})
except BackendUnavailableError as exc:
    print(exc)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "pip install ai-edge-litert" in out.stdout and "tflite-runtime" in out.stdout
