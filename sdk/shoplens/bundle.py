"""Device bundles, the device side: check a bundle before trusting its model.

A bundle (written on the host by :mod:`shoplens.bundle_writer`, format in docs/bundles.md)::

    bundle/
      manifest.json        format, model facts, budgets, sha256 of every other file
      manifest.sig         optional detached Ed25519 signature of manifest.json
      model.tflite  labels.txt  contract.json
      frames/000.png ...   golden camera frames (kiosk generator, fixed seed)
      expected/000.input.bin ...  the model input after preprocessing (raw bytes, C order NHWC)
      expected.json        per frame: file, true label, input dtype/shape, scores, top-1

:func:`verify_bundle` checks every file against the manifest (and the signature, given a public
key); :meth:`shoplens.Classifier.create_from_bundle` loads a model only after that.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shoplens._manifest import read_manifest
from shoplens.errors import DataError
from shoplens.internal.atomic import sha256_file

__all__ = ["BUNDLE_FORMAT", "DEFAULT_BUDGETS", "SIGNATURE_FILE", "verify_bundle", "verify_signature"]

SIGNATURE_FILE = "manifest.sig"  # detached Ed25519 signature of manifest.json's bytes
BUNDLE_FORMAT = 1
DEFAULT_BUDGETS = {
    "latency_p95_ms": 50.0,  # per frame, end to end, 1 thread; tighten for your device
    "rss_growth_mb_per_1000": 5.0,
    "input_tolerance_steps": 1,  # preprocessing parity: +-1 quantization step (or 1/255 in float)
    "score_tolerance": 0.02,  # absolute difference per score
}


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
    if isinstance(key, bytes):
        data = key
    else:
        try:
            data = Path(key).read_bytes()
        except OSError as exc:
            raise DataError(f"cannot read the key {key}: {exc.strerror or exc}") from None
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

def verify_bundle(
    bundle_dir: str | Path, *, public_key: str | Path | bytes | None = None
) -> dict[str, Any]:
    """The bundle's manifest, after checking its signature and the sha256 of every file it lists.

    Args:
      bundle_dir: the bundle directory.
      public_key: an Ed25519 public key (PEM path or bytes); then ``manifest.sig`` must verify.

    Returns:
      The manifest (a dict).

    Raises:
      DataError: no or a malformed manifest, a missing or changed file, a bad signature.
      DependencyError: a key is given but the ``cryptography`` package is missing.
    """
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
