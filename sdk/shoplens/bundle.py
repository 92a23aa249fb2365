"""Device bundles: a model with golden frames and the tensors and scores the host computed.

A mobile or kiosk team runs the golden frames through its own pipeline and compares with what
ShopLens computed here (format in docs/bundles.md)::

    bundle/
      manifest.json        format, model facts, budgets, sha256 of every other file
      model.tflite  labels.txt  contract.json
      frames/000.png ...   golden camera frames (kiosk generator, fixed seed)
      expected/000.input.bin ...  the model input after preprocessing (raw bytes, C order NHWC)
      expected.json        per frame: file, true label, input dtype/shape, scores, top-1

Written into a temporary directory and renamed into place, so a reader never sees half a bundle.
Needs only the runtime (no TensorFlow): ``shoplens bundle`` works on a device too.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from shoplens._atomic import replace_dir, sha256_file, stage_dir
from shoplens._manifest import read_manifest
from shoplens._version import __version__
from shoplens.errors import DataError, UsageError

__all__ = [
    "BUNDLE_FORMAT",
    "SIGNATURE_FILE",
    "sign_manifest",
    "verify_bundle",
    "verify_signature",
    "write_bundle",
]

SIGNATURE_FILE = "manifest.sig"  # detached Ed25519 signature of manifest.json's bytes


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        from shoplens.errors import DependencyError

        raise DependencyError(
            "bundle signatures need the cryptography package: pip install 'shoplens[sign]'"
        ) from None
    return serialization, ed25519


def _load_key(key: str | Path | bytes, private: bool) -> Any:
    serialization, ed25519 = _crypto()
    data = key if isinstance(key, bytes) else Path(key).read_bytes()
    kind = "private" if private else "public"
    try:
        if private:
            k = serialization.load_pem_private_key(data, password=None)
            ok = isinstance(k, ed25519.Ed25519PrivateKey)
        else:
            k = serialization.load_pem_public_key(data)
            ok = isinstance(k, ed25519.Ed25519PublicKey)
    except (ValueError, TypeError) as exc:
        raise DataError(f"cannot read the Ed25519 {kind} key: {exc}") from None
    if not ok:
        raise DataError(f"the {kind} key is not an Ed25519 key (PEM)")
    return k


def sign_manifest(bundle_dir: str | Path, private_key: str | Path | bytes) -> Path:
    """Write ``manifest.sig``: the Ed25519 signature of ``manifest.json`` with a PEM private key."""
    d = Path(bundle_dir)
    sig = _load_key(private_key, private=True).sign((d / "manifest.json").read_bytes())
    (d / SIGNATURE_FILE).write_bytes(sig)
    return d / SIGNATURE_FILE


def verify_signature(bundle_dir: str | Path, public_key: str | Path | bytes) -> None:
    """DataError unless ``manifest.sig`` is a valid signature of ``manifest.json`` by ``public_key``."""
    from cryptography.exceptions import InvalidSignature

    d = Path(bundle_dir)
    key = _load_key(public_key, private=False)
    sig_path = d / SIGNATURE_FILE
    if not sig_path.is_file():
        raise DataError(f"bundle {d} is not signed (no {SIGNATURE_FILE}) but a public key was given")
    try:
        key.verify(sig_path.read_bytes(), (d / "manifest.json").read_bytes())
    except InvalidSignature:
        raise DataError(
            f"bundle {d}: the signature does not match manifest.json (tampered, or another key)"
        ) from None

BUNDLE_FORMAT = 1
DEFAULT_BUDGETS = {
    "latency_p95_ms": 50.0,  # per frame, end to end, 1 thread; tighten for your device
    "rss_growth_mb_per_1000": 5.0,
    "input_tolerance_steps": 1,  # preprocessing parity: +-1 quantization step (or 1/255 in float)
    "score_tolerance": 0.02,  # absolute difference per score
}


def write_bundle(
    model_path: str | Path,
    out_dir: str | Path,
    *,
    frames: int = 16,
    seed: int = 2026,
    budgets: dict[str, float] | None = None,
    overwrite: bool = False,
    signing_key: str | Path | bytes | None = None,
) -> dict[str, Any]:
    """Write a bundle for ``model_path`` into ``out_dir``; returns the manifest.

    With ``signing_key`` (an Ed25519 private key, PEM), ``manifest.sig`` signs the manifest, which
    holds the sha256 of every other file: a device holding the public key can trust the bundle.
    """
    from shoplens.classifier import Classifier
    from shoplens.data.fashion_mnist import load_fashion_mnist
    from shoplens.data.kiosk import render_scene

    if not 1 <= frames <= 1000:
        raise UsageError(f"a bundle holds 1..1000 golden frames, got {frames}")
    model_path = Path(model_path)
    out = Path(out_dir)
    tmp = stage_dir(out, overwrite=overwrite)
    try:
        with Classifier.create_from_model_path(model_path) as clf:
            (tmp / "frames").mkdir()
            (tmp / "expected").mkdir()
            shutil.copyfile(model_path, tmp / "model.tflite")
            (tmp / "labels.txt").write_text("\n".join(clf.labels) + "\n", encoding="utf-8")
            (tmp / "contract.json").write_text(clf.contract.to_json(), encoding="utf-8")
            x, y = load_fashion_mnist("test")
            rng = np.random.default_rng(seed)
            picks = rng.choice(len(x), size=frames, replace=False)
            pre = clf.preprocessor
            inp = clf.info.inputs[0]
            rows = []
            for k, idx in enumerate(picks):
                frame = render_scene(x[idx], rng)
                name = f"frames/{k:03d}.png"
                if not cv2.imwrite(str(tmp / name), frame):
                    raise DataError(f"cannot write {tmp / name}")
                frame = cv2.imread(str(tmp / name), cv2.IMREAD_COLOR)  # exactly what a device reads
                tensor = np.empty((1, *pre.out_shape), pre.out_dtype)
                pre(frame, tensor)
                (tmp / f"expected/{k:03d}.input.bin").write_bytes(np.ascontiguousarray(tensor).tobytes())
                scores = clf.predict_preprocessed(tensor)[0]
                rows.append({
                    "frame": name,
                    "input": f"expected/{k:03d}.input.bin",
                    "label": int(y[idx]),
                    "scores": [round(float(s), 6) for s in scores],
                    "top1": int(np.argmax(scores)),
                })  # fmt: skip
            expected = {
                "input_dtype": str(pre.out_dtype),
                "input_shape": [1, *pre.out_shape],
                "input_quantization": {"scale": list(inp.scales), "zero_point": list(inp.zero_points)},
                "input_color_order_of_frames": "BGR",
                "frames": rows,
            }
            (tmp / "expected.json").write_text(json.dumps(expected, indent=1) + "\n", encoding="utf-8")
            manifest: dict[str, Any] = {
                "format": BUNDLE_FORMAT,
                "created_by": f"shoplens {__version__}",
                "created_unix": int(time.time()),
                "seed": seed,
                "frames": frames,
                "labels": list(clf.labels),
                "contract": clf.contract.to_dict(),
                "budgets": {**DEFAULT_BUDGETS, **(budgets or {})},
                "files": {},
            }
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        manifest["files"] = {str(p.relative_to(tmp)): sha256_file(p) for p in files}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        if signing_key is not None:
            sign_manifest(tmp, signing_key)
        os.chmod(tmp, 0o755)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def verify_bundle(
    bundle_dir: str | Path, *, public_key: str | Path | bytes | None = None
) -> dict[str, Any]:
    """The bundle's manifest, after checking its signature (with ``public_key``) and the sha256 of
    every file it lists."""
    d = Path(bundle_dir)
    manifest = read_manifest(d, "bundle", BUNDLE_FORMAT, ("files",))
    if public_key is not None:
        verify_signature(d, public_key)
    for rel, digest in manifest["files"].items():
        p = d / rel
        if not p.is_file():
            raise DataError(f"bundle {d} is missing {rel}")
        if sha256_file(p) != digest:
            raise DataError(f"bundle {d}: {rel} does not match its sha256 in the manifest (tampered?)")
    return dict(manifest)
