"""Edge TPU target: pre-flight on real converted models, and the compiler integration.

The compiler itself cannot be installed here (x86-64 Debian package from Coral's apt repository,
no network to it): ``tests/fakes/edgetpu_compiler`` is a TEST DOUBLE that mimics its command line,
report format and exit codes. Everything else (models, conversions, pre-flight) is real.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, one_line_error, run_cli
from shoplens.edgetpu import parse_log, preflight
from shoplens.edgetpu.compiler import compile_for_edgetpu
from shoplens.errors import ConversionError, DependencyError

FAKE_COMPILER = ROOT / "tests" / "fakes" / "edgetpu_compiler"


def _keras(layers_fn, n: int = 600):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    from shoplens.contract import PreprocessContract
    from shoplens.data.fashion_mnist import load_fashion_mnist
    from shoplens.preprocess import preprocess_batch

    contract = PreprocessContract.from_range(32, 32, -1.0, 1.0)
    x, y = load_fashion_mnist("train")
    xs = preprocess_batch(x[:n], contract)
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((32, 32, 3)), *layers_fn(keras.layers)])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(xs, y[:n], epochs=1, batch_size=64, verbose=0)
    return model, xs[:100]


def _edgetpu_int8(model, calib) -> bytes:
    from shoplens_convert.edgetpu_target import make_static
    from shoplens_convert.quantize import quantize

    return make_static(quantize(model, "int8", calibration=calib, io_type="uint8"))


@pytest.fixture(scope="module")
def supported_model():
    return _keras(lambda L: [
        L.Conv2D(8, 3, strides=2, padding="same", activation="relu6"),
        L.DepthwiseConv2D(3, padding="same", activation="relu"),
        L.Conv2D(16, 1, activation="relu"),
        L.GlobalAveragePooling2D(),
        L.Dense(10, activation="softmax"),
    ])  # fmt: skip


def test_fully_supported_model_maps_entirely(supported_model) -> None:
    pf = preflight(_edgetpu_int8(*supported_model))
    assert pf.fully_mapped, pf.summary()
    assert pf.op_share == 1.0 and pf.mac_share == 1.0
    assert [v.op for v in pf.ops][:2] == ["QUANTIZE", "CONV_2D"]
    assert pf.ops[1].macs == 16 * 16 * 8 * 3 * 3 * 3  # output 16x16x8, 3x3x3 kernel


def test_cpu_int8_model_has_dynamic_batch(supported_model) -> None:
    """The plain converter output keeps batch -1: the Edge TPU needs it pinned (--target edgetpu)."""
    from shoplens_convert.quantize import quantize

    pf = preflight(quantize(supported_model[0], "int8", calibration=supported_model[1]))
    assert pf.segment_end == 0 and pf.ops[0].category == "dynamic shape"
    assert "-1" in pf.ops[0].reason


def test_unsupported_op_in_the_middle_ends_the_segment() -> None:
    model, calib = _keras(lambda L: [
        L.Conv2D(8, 3, strides=2, padding="same", activation="relu"),
        L.LeakyReLU(0.1),  # LEAKY_RELU is not in the Edge TPU table
        L.Conv2D(16, 3, strides=2, padding="same", activation="relu"),
        L.GlobalAveragePooling2D(),
        L.Dense(10, activation="softmax"),
    ])  # fmt: skip
    pf = preflight(_edgetpu_int8(model, calib))
    names = [v.op for v in pf.ops]
    k = names.index("LEAKY_RELU")
    assert pf.segment_end == k
    assert all(v.maps for v in pf.ops[:k])
    assert pf.ops[k].category == "unsupported op"
    after = pf.ops[k + 1 :]
    assert after and all(v.category == "after the TPU segment" for v in after)
    assert 0 < pf.op_share < 1 and 0 < pf.mac_share < 0.5  # the big convs come after the break
    assert f"ends at op {k} (LEAKY_RELU" in pf.summary()


def test_float_op_falls_back(supported_model, tmp_path: Path) -> None:
    """An int8 model with one conv left in float (selective quantization) is not fully mapped."""
    from shoplens.tflite_model import read_model_info
    from shoplens_convert.edgetpu_target import make_static
    from shoplens_convert.selective import fallback_quantize

    model, calib = supported_model
    full = read_model_info(_edgetpu_int8(model, calib))
    conv_out = full.tensors[[o for o in full.ops if o.name == "CONV_2D"][1].outputs[0]].name
    mixed = make_static(fallback_quantize(model, calib, [conv_out]))
    pf = preflight(mixed)
    first_off = pf.blocker
    assert first_off is not None and first_off.category == "not quantized", pf.summary()
    assert "float32" in first_off.reason
    p = run_cli("edgetpu", "check", str(_write(tmp_path / "mixed.tflite", mixed)), "--require-full")
    one_line_error(p, 1, "not fully mapped")
    assert "TPU segment ends" in p.stdout


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_op_version_too_new_is_reported(supported_model) -> None:
    """A newer converter's op version (here CONV_2D v6, from TF 2.9) makes the compiler refuse the file."""
    from shoplens_convert.flatbuffer import pack_model, parse_model

    m = parse_model(_edgetpu_int8(*supported_model))
    for oc in m.operatorCodes:
        if max(oc.builtinCode, oc.deprecatedBuiltinCode) == 3:  # CONV_2D
            oc.version = 6
    pf = preflight(pack_model(m))
    conv = next(v for v in pf.ops if v.op == "CONV_2D")
    assert conv.category == "op version too new" and "google-coral/edgetpu#631" in conv.reason
    assert pf.model_errors and not pf.fully_mapped
    assert "refuse this model" in pf.summary()


def test_convert_target_edgetpu_reference_model_is_fully_mapped(tmp_path: Path) -> None:
    """The acceptance target: the reference model pre-flights as 100 % mapped. No compiler here."""
    out = tmp_path / "etpu"
    env = {"PATH": "/usr/bin:/bin", "SHOPLENS_EDGETPU_COMPILER": ""}
    p = run_cli("convert", str(ROOT / "sample_apps/reference_model/product_cnn.keras"), "--out", str(out),
                "--recipe", "int8", "--target", "edgetpu", "--calib-data", "fashion-mnist:train:100",
                "--json", env=env)  # fmt: skip
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    pf = rep["edgetpu"]["preflight"]
    assert pf["fully_mapped"] and pf["ops_mapped"] == pf["ops_total"] == 38, pf["summary"]
    assert rep["edgetpu"]["compiler"]["status"] == "not installed"
    assert "apt-get install edgetpu-compiler" in rep["edgetpu"]["compiler"]["message"]
    assert (out / "model.tflite").is_file() and not list(out.glob("*_edgetpu.tflite"))
    assert "## Edge TPU" in (out / "report.md").read_text()
    from shoplens.tflite_model import read_model_info

    info = read_model_info(out / "model.tflite")
    assert info.inputs[0].shape_signature == (1, 96, 96, 3) and info.inputs[0].dtype == "uint8"
    one_line_error(run_cli("convert", str(ROOT / "sample_apps/reference_model/product_cnn.keras"), "--out",
                           str(tmp_path / "x"), "--target", "edgetpu", "--recipe", "float16"), 2,
                   "full-integer")  # fmt: skip


# -- the compiler, through the labelled test double ------------------------------------------
def _fake_env(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    monkeypatch.setenv("SHOPLENS_EDGETPU_COMPILER", str(FAKE_COMPILER))
    monkeypatch.setenv("FAKE_EDGETPU_MODE", mode)


def test_compiler_success_is_parsed(supported_model, tmp_path: Path, monkeypatch) -> None:
    _fake_env(monkeypatch, "ok")
    src = _write(tmp_path / "m.tflite", _edgetpu_int8(*supported_model))
    res = compile_for_edgetpu(src, tmp_path / "out")
    assert res.output == tmp_path / "out" / "m_edgetpu.tflite" and res.output.is_file()
    assert (tmp_path / "out" / "m_edgetpu.log").is_file()
    assert res.compiler_version == "16.0.384591198"
    assert res.ops_on_tpu == 38 and res.ops_on_cpu == 0 and res.subgraphs == 1
    assert res.on_chip_memory == "421.25KiB" and res.off_chip_memory == "0.00B"
    assert {"op": "MEAN", "count": 1, "status": "Mapped to Edge TPU"} in res.operators
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".edgetpu")]


def test_compiler_log_with_cpu_ops_is_parsed() -> None:
    log = """Edge TPU Compiler version 16.0.384591198

Model compiled successfully in 98 ms.
On-chip memory used for caching model parameters: 1.20MiB
Off-chip memory used for streaming uncached model parameters: 0.00B
Number of Edge TPU subgraphs: 1
Total number of operations: 40
Model successfully compiled but not all operations are supported by the Edge TPU.
Number of operations that will run on Edge TPU: 12
Number of operations that will run on CPU: 28

Operator                       Count      Status

LEAKY_RELU                     1          Operation not supported
CONV_2D                        12         Mapped to Edge TPU
CONV_2D                        20         More than one subgraph is not supported
"""
    r = parse_log(log)
    assert (r.ops_on_tpu, r.ops_on_cpu, r.on_chip_memory) == (12, 28, "1.20MiB")
    assert r.operators[0] == {"op": "LEAKY_RELU", "count": 1, "status": "Operation not supported"}
    assert len(r.operators) == 3


def test_compiler_failure_hang_and_absence(supported_model, tmp_path: Path, monkeypatch) -> None:
    src = _write(tmp_path / "m.tflite", _edgetpu_int8(*supported_model))
    _fake_env(monkeypatch, "fail")
    with pytest.raises(
        ConversionError, match=r"exit 1\): ERROR: Didn't find op for builtin opcode 'QUANTIZE'"
    ):
        compile_for_edgetpu(src, tmp_path / "out")
    _fake_env(monkeypatch, "hang")
    with pytest.raises(ConversionError, match="did not finish within 2 s"):
        compile_for_edgetpu(src, tmp_path / "out", timeout_s=2)
    _fake_env(monkeypatch, "silent-success")
    with pytest.raises(ConversionError, match=r"wrote no m_edgetpu\.tflite"):
        compile_for_edgetpu(src, tmp_path / "out")
    assert not list((tmp_path / "out").glob("*_edgetpu.tflite"))
    monkeypatch.setenv("SHOPLENS_EDGETPU_COMPILER", str(tmp_path / "nope"))
    with pytest.raises(DependencyError, match="is not an executable"):
        compile_for_edgetpu(src, tmp_path / "out")
    assert src.read_bytes() == _edgetpu_int8(*supported_model)  # the input is never touched


def test_cli_compile_and_float_model_error(supported_model, tiny_rgb, tmp_path: Path) -> None:
    src = _write(tmp_path / "m.tflite", _edgetpu_int8(*supported_model))
    env = {"SHOPLENS_EDGETPU_COMPILER": str(FAKE_COMPILER), "FAKE_EDGETPU_MODE": "ok"}
    p = run_cli("edgetpu", "compile", str(src), "--out", str(tmp_path / "o"), "--json", env=env)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["preflight"]["fully_mapped"] and d["compiler"]["ops_on_tpu"] == 38
    f32 = str(tiny_rgb["f32"])
    one_line_error(run_cli("edgetpu", "compile", f32, "--out", str(tmp_path / "f"), env=env), 2,
                   "float model")  # fmt: skip
    env["FAKE_EDGETPU_MODE"] = "fail"
    one_line_error(run_cli("edgetpu", "compile", str(src), "--out", str(tmp_path / "o2"), env=env), 1,
                   "edgetpu_compiler failed")  # fmt: skip
    one_line_error(run_cli("edgetpu", "check", str(tmp_path / "missing.tflite")), 2, "does not exist")
    bad = _write(tmp_path / "trunc.tflite", src.read_bytes()[:200])
    p = run_cli("edgetpu", "check", str(bad))
    assert p.returncode == 2 and p.stderr.startswith("error: ") and "Traceback" not in p.stderr


def test_convert_with_compiler_writes_edgetpu_model(tiny_rgb, tmp_path: Path) -> None:
    env = {"SHOPLENS_EDGETPU_COMPILER": str(FAKE_COMPILER), "FAKE_EDGETPU_MODE": "ok"}
    out = tmp_path / "c"
    p = run_cli("convert", str(tiny_rgb["keras"]), "--out", str(out), "--target", "edgetpu",
                "--calib-data", "fashion-mnist:train:50", "--json", env=env)  # fmt: skip
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    assert rep["edgetpu"]["compiler"]["status"] == "compiled"
    assert (out / "model_edgetpu.tflite").is_file() and (out / "model.tflite").is_file()
    saved = json.loads((out / "report.json").read_text())
    assert saved["edgetpu"]["compiler"]["ops_on_tpu"] == 38
    env["FAKE_EDGETPU_MODE"] = "fail"
    p = run_cli("convert", str(tiny_rgb["keras"]), "--out", str(out), "--target", "edgetpu", "--overwrite",
                "--calib-data", "fashion-mnist:train:50", env=env)  # fmt: skip
    one_line_error(p, 1, "edgetpu_compiler failed")
    assert (out / "model.tflite").is_file()  # the CPU int8 model and the pre-flight stay
    assert json.loads((out / "report.json").read_text())["edgetpu"]["compiler"]["status"] == "failed"
    assert np.frombuffer((out / "model.tflite").read_bytes()[4:8], np.uint8).tobytes() == b"TFL3"
