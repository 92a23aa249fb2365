"""The converter's quantize and metadata stages (a small real model, real conversions)."""

from __future__ import annotations

import numpy as np
import pytest

from shoplens.contract import PreprocessContract
from shoplens.data.spec import open_dataset
from shoplens.errors import DataError, ModelError, UsageError
from shoplens.tflite_model import read_model_info
from shoplens_convert.load import load_keras_model
from shoplens_convert.metadata import embed_shoplens_metadata, shoplens_metadata_dict
from shoplens_convert.quantize import calibration_frames, quantize


def test_recipes_sizes_and_types(tiny_rgb) -> None:
    model = load_keras_model(tiny_rgb["keras"]).model
    c = PreprocessContract.load(tiny_rgb["keras"].parent / "contract.json")
    cal = calibration_frames(open_dataset("fashion-mnist:train:50"), c, 50)
    assert cal.shape == (50, 32, 32, 3) and cal.dtype == np.float32 and cal.min() >= 0 and cal.max() <= 1
    f32 = read_model_info(quantize(model, "float32"))
    f16 = read_model_info(quantize(model, "float16"))
    dyn = read_model_info(quantize(model, "dynamic"))
    i8 = read_model_info(quantize(model, "int8", calibration=cal, io_type="int8"))
    pt = read_model_info(quantize(model, "int8", calibration=cal, io_type="uint8", per_tensor=True))
    assert f32.inputs[0].dtype == "float32" and i8.inputs[0].dtype == "int8" and pt.inputs[0].dtype == "uint8"
    assert i8.size < 0.45 * f32.size and f16.size < 0.6 * f32.size and dyn.size < 0.45 * f32.size
    conv = [t for t in i8.tensors if t.dtype == "int8" and len(t.shape) == 4 and t.shape[0] == 16]
    assert any(len(t.scales) == 16 for t in conv)  # per-channel weights by default
    conv_pt = [t for t in pt.tensors if t.dtype == "int8" and len(t.shape) == 4 and t.shape[0] == 16]
    assert conv_pt and all(len(t.scales) == 1 for t in conv_pt)


def test_quantize_errors(tiny_rgb) -> None:
    model = load_keras_model(tiny_rgb["keras"]).model
    with pytest.raises(UsageError, match="unknown recipe"):
        quantize(model, "int4")
    with pytest.raises(DataError, match="calibration"):
        quantize(model, "int8")
    with pytest.raises(UsageError, match="io type"):
        quantize(model, "int8", calibration=np.zeros((1, 32, 32, 3), np.float32), io_type="int16")
    with pytest.raises(UsageError, match="at least 1"):
        calibration_frames(open_dataset("fashion-mnist:test:5"), PreprocessContract(32, 32), 0)


def test_metadata_round_trip(tiny_rgb) -> None:
    data = tiny_rgb["nometa"].read_bytes()
    c = PreprocessContract(32, 32, mean=(1, 2, 3), std=(4, 5, 6), color_order="BGR")
    meta = shoplens_metadata_dict(c, [f"c{i}" for i in range(10)], output="logits", source_sha256="ab")
    out = embed_shoplens_metadata(data, meta)
    info = read_model_info(out)
    assert info.shoplens_metadata == meta
    assert PreprocessContract.from_dict(info.shoplens_metadata["contract"]) == c
    again = read_model_info(embed_shoplens_metadata(out, {**meta, "labels": ["x"] * 10}))
    assert again.shoplens_metadata["labels"] == ["x"] * 10  # replaced, not duplicated
    assert list(again.metadata).count("shoplens.contract") == 1
    with pytest.raises(ModelError, match="output kind"):
        shoplens_metadata_dict(c, [], output="scores")


def test_metadata_entries_keep_the_associated_files(tiny_rgb) -> None:
    """Setting one metadata entry keeps the other and the labels zip; nothing accumulates."""
    from shoplens.contract import PreprocessContract as C
    from shoplens_convert.standard_metadata import ModelDescription, embed_standard_metadata

    data = tiny_rgb["nometa"].read_bytes()
    c = C.from_range(32, 32, 0.0, 1.0)
    labels = [f"c{i}" for i in range(10)]
    desc = ModelDescription("m", "d", "1")
    std = embed_standard_metadata(data, description=desc, contract=c, labels=labels)
    both = embed_shoplens_metadata(std, shoplens_metadata_dict(c, labels))
    again = embed_shoplens_metadata(both, shoplens_metadata_dict(c, labels))
    info = read_model_info(again)
    assert {"TFLITE_METADATA", "shoplens.contract"} <= set(info.metadata)
    assert info.associated_files["labels.txt"].decode().splitlines() == labels
    assert abs(len(again) - len(both)) < 64  # the replaced payload's buffer was emptied, not kept
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(again)) as zf:
        assert zf.testzip() is None and zf.namelist() == ["labels.txt"]


def test_compact_model_is_smaller_and_computes_the_same(tiny_rgb) -> None:
    from ai_edge_litert.interpreter import Interpreter

    from shoplens_convert.flatbuffer import compact_model

    raw = tiny_rgb["nometa"].read_bytes()
    small = compact_model(raw)
    assert len(small) < len(raw)
    x = np.random.default_rng(0).integers(0, 256, (10, 1, 32, 32, 3), dtype=np.uint8)
    outs = []
    for m in (raw, small):
        it = Interpreter(model_content=m)
        it.allocate_tensors()
        i, o = it.get_input_details()[0], it.get_output_details()[0]
        r = []
        for k in range(len(x)):
            it.set_tensor(i["index"], x[k])
            it.invoke()
            r.append(it.get_tensor(o["index"]).copy())
        outs.append(np.array(r))
    assert np.array_equal(outs[0], outs[1])
    assert not any(";" in t.name for t in read_model_info(small).tensors)
