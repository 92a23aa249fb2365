"""Load a Keras model without executing code from the file.

Keras 3 ``.keras`` and legacy ``.h5`` files are loaded with ``safe_mode=True``. Before that,
the model's config is read as plain JSON and scanned for ``Lambda`` layers (which carry
Python bytecode) so that even the legacy HDF5 path, where safe mode does not reach, refuses them.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shoplens.contract import PreprocessContract
from shoplens.data.datasets import read_labels_file
from shoplens.errors import DataError, ModelError
from shoplens.internal.atomic import sha256_file
from shoplens.internal.quiet import quiet_native_stderr
from shoplens_convert._tf import keras3, tensorflow, tf_keras

__all__ = [
    "LoadedModel",
    "check_contract_fits",
    "detect_output_kind",
    "find_sidecar_contract",
    "load_keras_model",
    "sha256_file",
]

_UNSAFE_CLASSES = ("Lambda",)


@dataclass
class LoadedModel:
    model: Any
    path: Path
    format: str  # "keras" | "h5" | "saved_model" (tf-keras) | "tf_saved_model" (signature only)
    sha256: str
    input_shape: tuple[int | None, ...]
    num_classes: int


def _scan_config(obj: Any, found: list[str]) -> None:
    if isinstance(obj, dict):
        cls = obj.get("class_name")
        if isinstance(cls, str) and cls in _UNSAFE_CLASSES:
            name = obj.get("config", {}).get("name", "?") if isinstance(obj.get("config"), dict) else "?"
            found.append(f"{cls} layer {name!r}")
        for v in obj.values():
            _scan_config(v, found)
    elif isinstance(obj, list):
        for v in obj:
            _scan_config(v, found)


def _read_config(path: Path, fmt: str) -> Any:
    try:
        if fmt == "keras":
            with zipfile.ZipFile(path) as zf:
                return json.loads(zf.read("config.json"))
        import h5py

        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
            if raw is None:
                raise ModelError(f"{path} holds no model_config; it is a weights-only file, not a model")
            return json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    except zipfile.BadZipFile:
        raise ModelError(f"{path} is not a valid .keras archive (corrupt or truncated zip)") from None
    except KeyError:
        raise ModelError(f"{path} has no config.json; it is not a Keras 3 model archive") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path} as a {fmt} model: {exc}") from None


def load_keras_model(path: str | Path, *, unsafe: bool = False) -> LoadedModel:
    """Load a ``.keras`` or ``.h5`` classifier; refuse Lambda layers unless ``unsafe``."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"model {p} does not exist")
    if p.is_dir():
        return _load_saved_model(p, unsafe)
    suffix = p.suffix.lower()
    if suffix == ".keras":
        fmt = "keras"
    elif suffix in (".h5", ".hdf5"):
        fmt = "h5"
    else:
        raise ModelError(
            f"{p}: unknown model format {suffix!r}; expected .keras, .h5 or a SavedModel directory"
        )
    config = _read_config(p, fmt)
    unsafe_parts: list[str] = []
    _scan_config(config, unsafe_parts)
    if unsafe_parts and not unsafe:
        raise ModelError(
            f"{p} contains {', '.join(unsafe_parts)} with arbitrary Python code; refusing to load it "
            "(pass --unsafe-load only for files you trust)"
        )
    keras = keras3()
    try:
        model = keras.saving.load_model(p, compile=False, safe_mode=not unsafe)
    except Exception as exc:  # keras raises many types for bad files; report them as one
        raise ModelError(f"cannot load {p}: {_first_line(exc)}") from None
    return _checked(model, p, fmt)


def _first_line(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return msg[:300]


class SignatureModel:
    """A plain TF SavedModel used through its serving signature (no Keras graph to edit).

    Enough for post-training quantization (``TFLiteConverter.from_saved_model``) and evaluation;
    pruning, QAT and folding need a Keras model.
    """

    def __init__(self, path: Path, fn: Any) -> None:
        self.saved_model_dir = path
        self._fn = fn
        spec_args, spec_kwargs = fn.structured_input_signature
        specs = list(spec_kwargs.values()) + list(spec_args)
        self._input_name = next(iter(spec_kwargs), None)
        self.inputs = specs
        outs = fn.structured_outputs
        self.outputs = list(outs.values()) if isinstance(outs, dict) else [outs]

    def __call__(self, x: Any, training: bool = False) -> Any:
        tf = tensorflow()
        t = tf.constant(x)
        out = self._fn(**{self._input_name: t}) if self._input_name else self._fn(t)
        if isinstance(out, dict):
            out = next(iter(out.values()))
        return out.numpy()


def _load_saved_model(p: Path, unsafe: bool) -> LoadedModel:
    if not (p / "saved_model.pb").is_file():
        raise ModelError(f"{p} is a directory without saved_model.pb; it is not a SavedModel")
    meta = p / "keras_metadata.pb"
    if meta.is_file():  # written by tf-keras: a Keras graph we can prune and fine-tune
        raw = meta.read_bytes()
        if any(f'"class_name": "{c}"'.encode() in raw for c in _UNSAFE_CLASSES) and not unsafe:
            raise ModelError(
                f"{p} contains a Lambda layer with arbitrary Python code; refusing to load it "
                "(pass --unsafe-load only for files you trust)"
            )
        tfk = tf_keras()
        try:
            with quiet_native_stderr():
                model = tfk.models.load_model(p, compile=False)
        except Exception as exc:
            raise ModelError(f"cannot load SavedModel {p}: {_first_line(exc)}") from None
        return _checked(model, p, "saved_model")
    tf = tensorflow()
    try:
        with quiet_native_stderr():
            obj = tf.saved_model.load(str(p))
        fn = obj.signatures["serving_default"]
    except KeyError:
        raise ModelError(f"SavedModel {p} has no 'serving_default' signature") from None
    except Exception as exc:
        raise ModelError(f"cannot load SavedModel {p}: {_first_line(exc)}") from None
    return _checked(SignatureModel(p, fn), p, "tf_saved_model")


def _checked(model: Any, p: Path, fmt: str) -> LoadedModel:
    inputs = model.inputs
    if len(inputs) != 1:
        raise ModelError(f"{p} has {len(inputs)} inputs; ShopLens needs exactly one image input (N, H, W, C)")
    shape = tuple(None if d is None else int(d) for d in inputs[0].shape)
    if len(shape) != 4 or shape[3] not in (1, 3):
        raise ModelError(f"{p} input shape {shape} is not an image (N, H, W, C) with C in 1 or 3")
    if shape[1] is None or shape[2] is None:
        raise ModelError(f"{p} input shape {shape} has dynamic height or width; give the model a static size")
    outputs = model.outputs
    if len(outputs) != 1 or len(outputs[0].shape) != 2 or outputs[0].shape[1] is None:
        got = [tuple(o.shape) for o in outputs]
        raise ModelError(f"{p} outputs {got}; a classifier needs one output of shape (N, K)")
    return LoadedModel(model, p, fmt, _sha256(p), shape, int(outputs[0].shape[1]))


def _sha256(p: Path) -> str:
    """sha256 of a file, or of a SavedModel directory's files in path order."""
    if p.is_file():
        return sha256_file(p)
    h = hashlib.sha256()
    for f in sorted(q for q in p.rglob("*") if q.is_file()):
        h.update(str(f.relative_to(p)).encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def find_sidecar_contract(model_path: Path, explicit: Path | None = None) -> PreprocessContract:
    """The contract given explicitly, or ``contract.json`` beside the model."""
    candidate = explicit or model_path.parent / "contract.json"
    if not candidate.is_file():
        raise DataError(
            f"no preprocessing contract for {model_path}: "
            "pass --contract FILE or put contract.json beside the model"
        )
    return PreprocessContract.load(candidate)


def find_labels(model_path: Path, explicit: Path | None, num_classes: int) -> tuple[str, ...]:
    """Labels from ``explicit`` or ``labels.txt`` beside the model; must match the class count."""
    candidate = explicit or model_path.parent / "labels.txt"
    if candidate.is_file():
        names = read_labels_file(candidate)
    elif explicit is not None:
        raise DataError(f"labels file {explicit} does not exist")
    else:
        names = tuple(str(i) for i in range(num_classes))
    if len(names) != num_classes:
        raise DataError(f"{candidate} lists {len(names)} labels but the model predicts {num_classes} classes")
    return names


def detect_output_kind(model: Any, probe: np.ndarray) -> tuple[str, str]:
    """('probabilities'|'logits', how it was decided)."""
    layers = getattr(model, "layers", None)
    if layers:
        last = layers[-1]
        act = getattr(last, "activation", None)
        act_name = getattr(act, "__name__", "") if act is not None else ""
        if type(last).__name__ == "Softmax" or act_name == "softmax":
            return "probabilities", f"final layer {last.name!r} applies softmax"
        if act_name == "linear":
            return "logits", f"final layer {last.name!r} is linear"
    y = np.asarray(model(probe, training=False), np.float64)
    if np.all(y >= -1e-6) and np.all(y <= 1 + 1e-6) and np.allclose(y.sum(axis=1), 1.0, atol=1e-3):
        return "probabilities", f"outputs on {len(probe)} images are non-negative and sum to 1"
    return "logits", f"outputs on {len(probe)} images do not sum to 1"


def check_contract_fits(loaded: LoadedModel, contract: PreprocessContract) -> None:
    """The contract's size and channels must be the model's input."""
    _, h, w, c = loaded.input_shape
    if (h, w, c) != (contract.height, contract.width, contract.channels):
        raise DataError(
            f"contract expects {contract.height}x{contract.width}x{contract.channels} "
            f"but the model input is {h}x{w}x{c}"
        )
