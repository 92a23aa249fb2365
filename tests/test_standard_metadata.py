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
        assert clf.labels[9] == "Ankle boot"  # from the associated file
        hits = [clf.classify(im).categories[0].index == lab for im, lab in zip(x[:200], y[:200], strict=True)]
    assert np.mean(hits) > 0.6
