"""Standard TFLite metadata, checked by clients we did not write: MediaPipe's schema reader and
MediaPipe Tasks' ImageClassifier loading our converted models unmodified."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import run_cli
from shoplens.data.fashion_mnist import FASHION_MNIST_LABELS
from shoplens.tflite_model import read_model_info

mp = pytest.importorskip("mediapipe", reason="MediaPipe is installed by make setup")
from mediapipe.tasks.metadata import metadata_schema_py_generated as mds  # noqa: E402
from mediapipe.tasks.python import BaseOptions, vision  # noqa: E402


@pytest.fixture(scope="module")
def converted(tiny_rgb, per_channel_model, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("std_meta")
    models = {}
    for name, src, recipe in [
        ("float32", tiny_rgb["keras"], "float32"),
        ("int8", tiny_rgb["keras"], "int8"),
        ("per_channel", per_channel_model, "float32"),
        ("per_channel_int8", per_channel_model, "int8"),
    ]:
        d = out / name
        p = run_cli("convert", str(src), "--out", str(d), "--recipe", recipe,
                    "--calib-data", "fashion-mnist:train:200", "--name", f"shop_{name}",
                    "--model-version", "7", "-q")  # fmt: skip
        assert p.returncode == 0, p.stderr
        models[name] = d / "model.tflite"
    return models


def test_metadata_parses_with_mediapipe_schema(converted) -> None:
    info = read_model_info(converted["float32"])
    m = mds.ModelMetadata.GetRootAs(info.metadata["TFLITE_METADATA"], 0)
    assert mds.ModelMetadata.ModelMetadataBufferHasIdentifier(info.metadata["TFLITE_METADATA"], 0)
    assert m.Name() == b"shop_float32" and m.Version() == b"7" and m.Author() == b"ShopLens"
    sg = m.SubgraphMetadata(0)
    inp = sg.InputTensorMetadata(0)
    assert inp.Content().ContentPropertiesType() == mds.ContentProperties.ImageProperties
    props = mds.ImageProperties()
    props.Init(inp.Content().ContentProperties().Bytes, inp.Content().ContentProperties().Pos)
    assert props.ColorSpace() == mds.ColorSpaceType.RGB
    assert (props.DefaultSize().Width(), props.DefaultSize().Height()) == (32, 32)
    unit = inp.ProcessUnits(0)
    assert unit.OptionsType() == mds.ProcessUnitOptions.NormalizationOptions
    norm = mds.NormalizationOptions()
    norm.Init(unit.Options().Bytes, unit.Options().Pos)
    assert norm.MeanAsNumpy().tolist() == [0.0, 0.0, 0.0] and norm.StdAsNumpy().tolist() == [255.0] * 3
    out = sg.OutputTensorMetadata(0)
    f = out.AssociatedFiles(0)
    assert f.Name() == b"labels.txt" and f.Type() == mds.AssociatedFileType.TENSOR_AXIS_LABELS
    assert info.associated_files["labels.txt"].decode().split("\n")[:10] == list(FASHION_MNIST_LABELS)
    # a per-channel contract was folded: the metadata carries one mean/std over [0, 255]
    pc = read_model_info(converted["per_channel"])
    sg = mds.ModelMetadata.GetRootAs(pc.metadata["TFLITE_METADATA"], 0).SubgraphMetadata(0)
    unit = sg.InputTensorMetadata(0).ProcessUnits(0)
    norm.Init(unit.Options().Bytes, unit.Options().Pos)
    assert norm.MeanAsNumpy().tolist() == [0.0] * 3 and norm.StdAsNumpy().tolist() == [1.0] * 3
    assert pc.shoplens_metadata["contract"]["mean"] == [0.0] * 3


@pytest.mark.parametrize("name", ["float32", "int8", "per_channel", "per_channel_int8"])
def test_mediapipe_image_classifier_returns_our_labels(name, converted, fmnist_test) -> None:
    from shoplens.classifier import Classifier

    opts = vision.ImageClassifierOptions(
        base_options=BaseOptions(model_asset_path=str(converted[name])), max_results=3
    )
    x, y = fmnist_test
    agree = correct = 0
    n = 200
    with (
        vision.ImageClassifier.create_from_options(opts) as mp_clf,
        Classifier.create_from_model_path(converted[name]) as ours,
    ):
        for img, label in zip(x[:n], y[:n], strict=True):
            rgb = np.ascontiguousarray(cv2.cvtColor(cv2.resize(img, (32, 32)), cv2.COLOR_GRAY2RGB))
            res = mp_clf.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb))
            top = res.classifications[0].categories[0]
            assert top.category_name in FASHION_MNIST_LABELS  # OUR label names, from the associated file
            correct += top.category_name == FASHION_MNIST_LABELS[label]
            agree += top.index == ours.classify(rgb[..., ::-1]).categories[0].index
    assert correct / n > 0.6, correct
    assert agree / n >= 0.9, agree


def test_report_records_the_fold(per_channel_model, tmp_path: Path) -> None:
    p = run_cli("convert", str(per_channel_model), "--out", str(tmp_path), "--recipe", "float16", "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert (
        r["fold"]["reason"].startswith("per-channel normalization")
        and r["fold"]["max_output_difference"] < 1e-3
    )


def test_sdk_reads_a_model_with_only_standard_metadata(converted, fmnist_test, tmp_path: Path) -> None:
    """A model from another toolchain: no ShopLens entry, only TFLITE_METADATA and labels.txt."""
    from ai_edge_litert import schema_py_generated as schema

    from shoplens.classifier import Classifier

    data = converted["int8"].read_bytes()
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    model.metadata = [m for m in model.metadata if m.name not in (b"shoplens.contract", "shoplens.contract")]
    import flatbuffers

    b = flatbuffers.Builder(len(data))
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    zip_start = data.index(b"PK\x03\x04", len(data) - 4096)
    foreign = tmp_path / "foreign.tflite"
    foreign.write_bytes(bytes(b.Output()) + data[zip_start:])
    info = read_model_info(foreign)
    assert info.shoplens_metadata is None and info.standard_metadata["mean"] == [0.0] * 3
    x, y = fmnist_test
    with Classifier.create_from_model_path(foreign) as clf:
        assert clf.contract.crop.value == "stretch" and clf.contract.std == (255.0,) * 3
        assert clf.contract.interpolation.value == "linear-mediapipe"  # MediaPipe's default, exactly
        assert clf.labels[9] == "Ankle boot"  # from the associated file
        hits = [clf.classify(im).categories[0].index == lab for im, lab in zip(x[:200], y[:200], strict=True)]
    assert np.mean(hits) > 0.6


@pytest.fixture(scope="module")
def mediapipe_grid(tiny_rgb, tmp_path_factory) -> dict[str, Path]:
    """The tiny model converted with a contract that resizes on MediaPipe's sampling grid."""
    from shoplens.contract import PreprocessContract

    out = tmp_path_factory.mktemp("mp_grid")
    base = json.loads((tiny_rgb["keras"].parent / "contract.json").read_text())
    contract = out / "contract.json"
    contract.write_text(PreprocessContract.from_dict({**base, "interpolation": "linear-mediapipe"}).to_json())
    models = {}
    for recipe in ("float32", "int8"):
        p = run_cli("convert", str(tiny_rgb["keras"]), "--out", str(out / recipe), "--recipe", recipe,
                    "--contract", str(contract), "--calib-data", "fashion-mnist:train:200", "-q")  # fmt: skip
        assert p.returncode == 0, p.stderr
        models[recipe] = out / recipe / "model.tflite"
    return models


def _parity_frames(fmnist_test) -> list[np.ndarray]:
    """Real BGR frames of several shapes: 640x480 kiosk scenes (downscaled 15x), an odd 333x250
    (non-integer factor), a portrait 240x320, and bare 28x28 products (upscaled)."""
    from shoplens.data.kiosk import iter_kiosk_frames

    x, y = fmnist_test
    kiosk = [f for f, _, _ in iter_kiosk_frames(x[:300], y[:300], 24, seed=11)]
    odd = [cv2.resize(f, (333, 250), interpolation=cv2.INTER_AREA) for f in kiosk[:8]]
    portrait = [np.ascontiguousarray(np.rot90(f)[::2, ::2]) for f in kiosk[8:16]]
    small = [cv2.cvtColor(im, cv2.COLOR_GRAY2BGR) for im in x[300:308]]
    return kiosk + odd + portrait + small


@pytest.mark.parametrize("recipe", ["float32", "int8"])
def test_sdk_matches_mediapipe_on_the_mediapipe_grid(recipe, mediapipe_grid, fmnist_test) -> None:
    """With ``interpolation: linear-mediapipe`` the SDK feeds the model what MediaPipe's
    ImageClassifier feeds it: the same scores for the centre crop (MediaPipe given the centre
    square as its region of interest) and for the stretched whole frame (MediaPipe's default)."""
    from mediapipe.tasks.python.components.containers import rect as mp_rect

    from shoplens.classifier import Classifier
    from shoplens.options import ClassifierOptions

    path = mediapipe_grid[recipe]
    opts = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(path)), max_results=10)
    every = ClassifierOptions(max_results=10)
    worst = {"exact": 0.0, "fractional": 0.0}
    control = 0.0
    with (
        vision.ImageClassifier.create_from_options(opts) as mp_clf,
        Classifier.create_from_model_path(path, classifier_options=every) as center,
        Classifier.create_from_model_path(path, classifier_options=every, crop="stretch") as stretch,
    ):
        assert center.contract.interpolation.value == "linear-mediapipe"
        # the control: OpenCV's own bilinear grid (half-pixel centres) is visibly not MediaPipe's
        plain = Classifier.create_from_model_path(
            path, classifier_options=every, contract=center.contract.replace(interpolation="linear")
        )
        for frame in _parity_frames(fmnist_test):
            h, w = frame.shape[:2]
            s = min(h, w)
            x0, y0 = (w - s) // 2, (h - s) // 2
            roi = mp_rect.RectF(left=x0 / w, top=y0 / h, right=(x0 + s) / w, bottom=(y0 + s) / h)
            image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(frame[..., ::-1]))
            for key, ours, ipo in (
                ("center", center, vision.ImageProcessingOptions(region_of_interest=roi)),
                ("stretch", stretch, None),
                ("control", plain, vision.ImageProcessingOptions(region_of_interest=roi)),
            ):
                theirs = np.zeros(10)
                for c in mp_clf.classify(image, ipo).classifications[0].categories:
                    theirs[c.index] = c.score
                mine = np.zeros(10)
                for c in ours.classify(frame).categories:
                    mine[c.index] = c.score
                exact = s % 32 == 0 if key == "center" else h % 32 == w % 32 == 0  # integer factor
                if key == "control":
                    control = max(control, float(np.abs(mine - theirs).max()))
                    continue
                worst["exact" if exact else "fractional"] = max(
                    worst["exact" if exact else "fractional"], float(np.abs(mine - theirs).max())
                )
                assert mine.argmax() == theirs.argmax(), (key, frame.shape, mine, theirs)
        plain.close()
    # integer scale factors (640x480 -> 32x32 is 15x): the same input tensor, so for int8 the same
    # quantized output and for float32 float rounding only. Fractional factors: MediaPipe interpolates
    # in float, ShopLens in OpenCV's 8-bit fixed point (4x faster); pixels may differ by 1 step.
    assert worst["exact"] <= (1e-6 if recipe == "int8" else 1e-5), worst
    assert worst["fractional"] <= 0.03, worst
    assert control > 0.03, control
