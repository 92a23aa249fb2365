"""Bridge a Keras 3 model into tf-keras (Keras 2), which TFMOT needs for pruning and QAT.

tf-keras cannot read a Keras 3 file, and the two serialised configs differ (``batch_shape``,
dtype-policy objects, the call graph recorded as ``__keras_tensor__`` arguments). So the bridge
does not translate files: it walks the Keras 3 functional graph, builds each layer again with
tf-keras from its cleaned config, calls it on the bridged inputs exactly as the source did, and
copies the weights layer by layer. Unknown config keys are dropped only when tf-keras names them
as unrecognised, and every drop is recorded in :attr:`BridgeResult.dropped_keys`.

No code from the source file runs here: layers are built from their registered class names.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shoplens.errors import ConversionError
from shoplens_convert._tf import keras3, tf_keras

__all__ = ["BridgeResult", "bridge_to_tf_keras", "max_output_difference"]

_UNRECOGNISED = re.compile(
    r"(?:Unrecognized keyword arguments|unexpected keyword argument|Keyword argument not understood)"
    r"[^\[']*[\[']([^\])]*)"
)


@dataclass
class BridgeResult:
    model: Any  # tf_keras.Model
    dropped_keys: dict[str, list[str]] = field(default_factory=dict)


def _clean(obj: Any) -> Any:
    """Keras 3 config values to their tf-keras spelling."""
    if isinstance(obj, dict):
        if obj.get("class_name") in ("DTypePolicy", "FloatDTypePolicy") and "config" in obj:
            return obj["config"].get("name", "float32")
        if "class_name" in obj and "config" in obj and "module" in obj:
            return {"class_name": obj["class_name"], "config": _clean(obj["config"])}
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


def _drop_key(obj: Any, key: str) -> bool:
    """Remove ``key`` wherever it appears in a nested config; True if it held a value (not None)."""
    found = False
    if isinstance(obj, dict):
        if key in obj:
            found = obj.pop(key) is not None or found
        for v in obj.values():
            found = _drop_key(v, key) or found
    elif isinstance(obj, list):
        for v in obj:
            found = _drop_key(v, key) or found
    return found


def _has_key(obj: Any, key: str) -> bool:
    if isinstance(obj, dict):
        return key in obj or any(_has_key(v, key) for v in obj.values())
    if isinstance(obj, list):
        return any(_has_key(v, key) for v in obj)
    return False


def _build_layer(tfk: Any, class_name: str, config: dict[str, Any], dropped: list[str]) -> Any:
    config = {k: v for k, v in config.items() if k not in ("build_config",)}
    for _ in range(32):
        try:
            return tfk.layers.deserialize({"class_name": class_name, "config": config})
        except (TypeError, ValueError) as exc:
            m = _UNRECOGNISED.search(str(exc))
            if not m:
                raise ConversionError(
                    f"cannot rebuild layer {config.get('name')!r} ({class_name}) in tf-keras: {exc}"
                ) from None
            keys = [k.strip(" '\"") for k in m.group(1).split(",") if k.strip(" '\"")]
            present = [k for k in keys if _has_key(config, k)]
            if not present:
                raise ConversionError(
                    f"cannot rebuild layer {config.get('name')!r} ({class_name}) in tf-keras: {exc}"
                ) from None
            dropped.extend(k for k in present if _drop_key(config, k))
    raise ConversionError(f"cannot rebuild layer {config.get('name')!r} ({class_name}) in tf-keras")


def _resolve(arg: Any, tensors: dict[tuple[str, int, int], Any]) -> Any:
    if isinstance(arg, dict) and arg.get("class_name") == "__keras_tensor__":
        name, node, index = arg["config"]["keras_history"]
        try:
            return tensors[(name, node, index)]
        except KeyError:
            raise ConversionError(
                f"bridge: tensor {name}[{node}][{index}] is used before it is built"
            ) from None
    if isinstance(arg, list):
        return [_resolve(a, tensors) for a in arg]
    if isinstance(arg, tuple):
        return tuple(_resolve(a, tensors) for a in arg)
    if isinstance(arg, dict):
        return {k: _resolve(v, tensors) for k, v in arg.items()}
    return arg


def _functional(model: Any) -> Any:
    keras = keras3()
    if isinstance(model, keras.Sequential):
        # a Sequential built with an Input has a functional twin with the same layers
        inp = keras.Input(batch_shape=model.inputs[0].shape, dtype=model.inputs[0].dtype, name="input")
        x = inp
        for layer in model.layers:
            x = layer(x)
        return keras.Model(inp, x, name=model.name)
    return model


def bridge_to_tf_keras(model: Any, *, input_transform: Callable[[Any], Any] | None = None) -> BridgeResult:
    """A tf-keras functional model with the same architecture and weights as ``model`` (Keras 3).

    ``input_transform`` (tf-keras tensor -> tensor) is inserted between the input and the first
    layers; the normalization fold uses it.
    """
    tfk = tf_keras()
    model = _functional(model)
    config = model.get_config()
    by_name = {layer.name: layer for layer in model.layers}
    tensors: dict[tuple[str, int, int], Any] = {}
    new_layers: dict[str, Any] = {}
    dropped: dict[str, list[str]] = {}
    bridged_inputs: list[Any] = []
    for spec in config["layers"]:
        name = spec["config"].get("name", spec.get("name"))
        cls = spec["class_name"]
        if cls == "InputLayer":
            c = spec["config"]
            shape = c.get("batch_shape") or c.get("batch_input_shape")
            t = tfk.Input(batch_shape=tuple(shape), dtype=c.get("dtype", "float32"), name=name)
            tensors[(name, 0, 0)] = t
            bridged_inputs.append(t)
            if input_transform is not None:
                tensors[(name, 0, 0)] = input_transform(t)
            continue
        if cls in ("Functional", "Sequential", "Model"):
            raise ConversionError(
                f"bridge: nested model {name!r} is not supported; flatten it into one functional model"
            )
        layer_dropped: list[str] = []
        layer = _build_layer(tfk, cls, _clean(spec["config"]), layer_dropped)
        if layer_dropped:
            dropped[name] = sorted(set(layer_dropped))
        new_layers[name] = layer
        for node_index, node in enumerate(spec.get("inbound_nodes", [])):
            args = _resolve(node.get("args", []), tensors)
            kwargs = _resolve(node.get("kwargs", {}), tensors)
            out = layer(*args, **kwargs)
            outs = out if isinstance(out, (list, tuple)) else [out]
            for i, t in enumerate(outs):
                tensors[(name, node_index, i)] = t

    def pick(refs: Any) -> list[Any]:
        if refs and isinstance(refs[0], str):  # a single [name, node, index]
            refs = [refs]
        return [tensors[(r[0], r[1], r[2])] for r in refs]

    inputs = bridged_inputs
    outputs = pick(config["output_layers"])
    bridged = tfk.Model(
        inputs[0] if len(inputs) == 1 else inputs,
        outputs[0] if len(outputs) == 1 else outputs,
        name=model.name,
    )
    for name, layer in new_layers.items():
        src = by_name[name].get_weights()
        dst = layer.get_weights()
        if len(src) != len(dst) or any(a.shape != b.shape for a, b in zip(src, dst, strict=True)):
            raise ConversionError(
                f"bridge: layer {name!r} has weights {[w.shape for w in src]} in Keras 3 "
                f"but {[w.shape for w in dst]} in tf-keras"
            )
        layer.set_weights(src)
    return BridgeResult(bridged, dropped)


def max_output_difference(a: Any, b: Any, x: np.ndarray) -> float:
    """Largest absolute difference between two models' outputs on ``x`` (inference mode)."""
    ya = np.asarray(a(x, training=False))
    yb = np.asarray(b(x, training=False))
    return float(np.max(np.abs(ya - yb)))
