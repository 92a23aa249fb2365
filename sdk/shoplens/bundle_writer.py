"""Device bundles, the host side: write a model with golden frames and expected outputs, and sign it.

A mobile or kiosk team runs the golden frames through its own pipeline and compares with what
ShopLens computed here (format in docs/bundles.md and :mod:`shoplens.bundle`). Written into a
temporary directory and renamed into place, so a reader never sees half a bundle. Needs only the
runtime (no TensorFlow): ``shoplens bundle`` works on a device too.

    >>> manifest = write_bundle("out/int8/model.tflite", "out/bundle", frames=16)  # doctest: +SKIP
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

from shoplens._version import __version__
from shoplens.bundle import BUNDLE_FORMAT, DEFAULT_BUDGETS, SIGNATURE_FILE, _load_key
from shoplens.errors import DataError, UsageError
from shoplens.internal.atomic import sha256_file
from shoplens.internal.outputs import output_lock, publish_output_dir, remove_path, stage_output_dir

__all__ = ["sign_manifest", "write_bundle"]


def sign_manifest(bundle_dir: str | Path, private_key: str | Path | bytes) -> Path:
    """Write ``manifest.sig``: the Ed25519 signature of ``manifest.json`` with a PEM private key."""
    d = Path(bundle_dir)
    sig = _load_key(private_key, private=True).sign((d / "manifest.json").read_bytes())
    (d / SIGNATURE_FILE).write_bytes(sig)
    return d / SIGNATURE_FILE


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

    if not 1 <= frames <= 1000:
        raise UsageError(f"a bundle holds 1..1000 golden frames, got {frames}")
    model_path = Path(model_path)
    out = Path(out_dir)
    if signing_key is not None:
        _load_key(signing_key, private=True)  # a missing or wrong key fails before any work
    key_inputs = [signing_key] if isinstance(signing_key, (str, Path)) else []
    with output_lock(out):
        return _write(model_path, out, frames, seed, budgets, overwrite, signing_key, key_inputs)


def _write(
    model_path: Path, out: Path, frames: int, seed: int, budgets: dict[str, float] | None, overwrite: bool,
    signing_key: str | Path | bytes | None, key_inputs: list[str | Path],
) -> dict[str, Any]:  # fmt: skip
    from shoplens.classifier import Classifier
    from shoplens.data.fashion_mnist import load_fashion_mnist
    from shoplens.data.kiosk import render_scene

    tmp = stage_output_dir(out, overwrite=overwrite, inputs=[model_path, *key_inputs])
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
        publish_output_dir(tmp, out, command="bundle")
    except BaseException:
        remove_path(tmp)
        raise
    return manifest
