"""Untrusted models: static checks, an isolated probe, signed bundles; a bounded model fuzz."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, one_line_error, run_cli
from shoplens.classifier import Classifier
from shoplens.errors import DataError, ModelError

CRASHER = ROOT / "tests" / "data" / "fuzz_crash_sigabrt.tflite"


def test_the_fuzzers_crasher_is_refused_statically_and_crashes_only_a_probe() -> None:
    """A byte-flipped reference model that aborted LiteRT in allocate_tensors (fuzz seed 1, #1568)."""
    from shoplens._probe import probe_model
    from shoplens.tflite_model import read_model_info

    with pytest.raises(ModelError, match="zero point outside the int8 range"):
        read_model_info(CRASHER)
    with pytest.raises(ModelError, match=r"crashed the TFLite runtime in an isolated probe \(SIGABRT\)"):
        probe_model(CRASHER.read_bytes())  # bypasses the static checks: the child dies, we do not


def test_mutated_models_never_crash_the_loader(tiny_rgb) -> None:
    from benchmarks.fuzz_models import run

    res = run(tiny_rgb["int8"], 300, seed=5)
    assert res["outcomes"].get("crashed", 0) == 0, res["examples"]
    assert res["outcomes"].get("other_error", 0) == 0, res["examples"]
    assert res["outcomes"]["clean_error"] > 100


def _keys(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    priv, pub = tmp_path / "key.pem", tmp_path / "pub.pem"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))  # fmt: skip
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, spki))
    return priv, pub


def test_signed_bundle_loads_only_when_everything_checks_out(tiny_rgb, tmp_path: Path, fmnist_test) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    priv, pub = _keys(tmp_path / "a")
    other_priv, other_pub = _keys(tmp_path / "b")
    b = tmp_path / "bundle"
    p = run_cli("bundle", str(tiny_rgb["int8"]), "--out", str(b), "--frames", "3", "--sign-key", str(priv))
    assert p.returncode == 0, p.stderr
    assert (b / "manifest.sig").is_file()
    frame = np.stack([fmnist_test[0][1]] * 3, axis=-1)
    with Classifier.create_from_bundle(b, public_key=pub) as clf:  # signature, sha256s, isolated probe
        assert clf.classify(frame).top is not None
    with pytest.raises(DataError, match="signature does not match"):
        Classifier.create_from_bundle(b, public_key=other_pub)
    m = json.loads((b / "manifest.json").read_text())
    m["budgets"]["score_tolerance"] = 0.5  # a quiet edit of the manifest breaks the signature
    (b / "manifest.json").write_text(json.dumps(m, indent=1) + "\n")
    with pytest.raises(DataError, match="signature does not match"):
        Classifier.create_from_bundle(b, public_key=pub)
    # a swapped model is caught by the (signed) sha256 list
    b2 = tmp_path / "bundle2"
    run_cli("bundle", str(tiny_rgb["int8"]), "--out", str(b2), "--frames", "2", "--sign-key", str(other_priv))
    (b2 / "model.tflite").write_bytes(tiny_rgb["int8io"].read_bytes())
    with pytest.raises(DataError, match=r"model\.tflite does not match its sha256"):
        Classifier.create_from_bundle(b2, public_key=other_pub)
    # an unsigned bundle is refused when a key is expected
    b3 = tmp_path / "bundle3"
    run_cli("bundle", str(tiny_rgb["int8"]), "--out", str(b3), "--frames", "2")
    with pytest.raises(DataError, match="is not signed"):
        Classifier.create_from_bundle(b3, public_key=pub)
    one_line_error(run_cli("bundle", str(tiny_rgb["int8"]), "--out", str(tmp_path / "x"), "--sign-key",
                           str(pub)), 2, "private key")  # fmt: skip


def test_keras_lambda_layer_is_refused(tmp_path: Path) -> None:
    """The converter never executes code from a model file (Keras safe mode, and a config scan)."""
    import keras

    inp = keras.Input((8, 8, 1))
    out = keras.layers.Lambda(lambda t: t * 2.0)(inp)
    out = keras.layers.Flatten()(out)
    out = keras.layers.Dense(2, activation="softmax")(out)
    path = tmp_path / "lambda.keras"
    keras.Model(inp, out).save(path)
    one_line_error(run_cli("eval", str(path), "--data", "fashion-mnist:test:5"), 2, "Lambda")
