"""One Keras 3 layer call -> the tf-keras layer that computes the same thing, and how to call it.

Most layers exist in both: they are rebuilt from their registered class name and cleaned config
(unknown keys are dropped only when tf-keras names them as unrecognised and they hold no setting
that changes the result). What tf-keras lacks gets a layer of :mod:`.tfk_layers`; what neither
can express is a one-line ConversionError naming the layer and its class.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from shoplens.errors import ConversionError
from shoplens_convert._tf import tf_keras
from shoplens_convert.bridge.graph import Call, Ref
from shoplens_convert.bridge.tfk_layers import ACTIVATIONS, custom_layers

__all__ = ["Translated", "translate"]

_UNRECOGNISED = re.compile(
    r"(?:Unrecognized keyword arguments|unexpected keyword argument|Keyword argument not understood)"
    r"[^\[']*[\[']([^\])]*)"
)
# Keras 3 spellings of activations that tf-keras knows under another name
_ACTIVATION_ALIASES = {"silu": "swish"}
_OPS = {"Add": "add", "Subtract": "subtract", "Multiply": "multiply", "Divide": "divide",
        "TrueDivide": "divide", "Maximum": "maximum", "Minimum": "minimum", "Power": "power"}  # fmt: skip
_MERGE = {"add": "Add", "subtract": "Subtract", "multiply": "Multiply", "maximum": "Maximum",
          "minimum": "Minimum"}  # fmt: skip
_CONVNEXT_LAYERS = ("LayerScale", "StochasticDepth")


@dataclass
class Translated:
    """The tf-keras layer that holds the weights, how to call it, and how it was bridged."""

    layer: Any
    apply: Callable[[list[Any], dict[str, Any]], Any]
    note: str | None = None  # set when the bridge did more than rebuild the same class


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


def _activation_name(value: Any, where: str) -> str | None:
    """The Keras 3 activation's registered name (None when it is not a plain named activation)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("config"), str):
        return str(value["config"])
    if isinstance(value, dict) and value.get("class_name") == "function":
        return str(value.get("config"))
    raise ConversionError(
        f"cannot bridge layer {where!r}: its activation {value!r} is not a named activation"
    )


def _native_activation(name: str) -> str | None:
    """tf-keras's name for a Keras 3 activation computed the same way, or None."""
    if name in ACTIVATIONS:
        return None
    name = _ACTIVATION_ALIASES.get(name, name)
    try:
        tf_keras().activations.get(name)
    except (ValueError, TypeError):
        return None
    return name


def _build(tfk: Any, class_name: str, config: dict[str, Any], where: str, dropped: list[str]) -> Any:
    """``tfk.layers.deserialize`` that drops keys tf-keras does not know, if they are unset."""
    config = {k: v for k, v in config.items() if k not in ("build_config",)}
    for _ in range(32):
        try:
            return tfk.layers.deserialize({"class_name": class_name, "config": config})
        except (TypeError, ValueError) as exc:
            text = str(exc)
            if "Unknown layer" in text or "Could not locate class" in text:
                raise ConversionError(
                    f"cannot bridge layer {where!r} ({class_name}): tf-keras has no such layer"
                ) from None
            m = _UNRECOGNISED.search(text)
            keys = [k.strip(" '\"") for k in m.group(1).split(",") if k.strip(" '\"")] if m else []
            present = [k for k in keys if _pop_unset(config, k, where, class_name)]
            if not present:
                first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
                raise ConversionError(
                    f"cannot rebuild layer {where!r} ({class_name}) in tf-keras: {first[:200]}"
                ) from None
            dropped.extend(present)
    raise ConversionError(f"cannot rebuild layer {where!r} ({class_name}) in tf-keras")


def _pop_unset(obj: Any, key: str, where: str, class_name: str) -> bool:
    """Remove ``key`` wherever it appears in a nested config; True if it was there. A key that
    holds a setting (not None, False, 0 or empty) would change the result: ConversionError."""
    found = False
    if isinstance(obj, dict):
        if key in obj:
            v = obj.pop(key)
            if v not in (None, False, 0, "", [], {}):
                raise ConversionError(
                    f"cannot bridge layer {where!r} ({class_name}): its option {key}={v!r} has no "
                    "tf-keras equivalent"
                )
            found = True
        for v in obj.values():
            found = _pop_unset(v, key, where, class_name) or found
    elif isinstance(obj, list):
        for v in obj:
            found = _pop_unset(v, key, where, class_name) or found
    return found


def _activation_layer(tfk: Any, name: str, layer_name: str) -> tuple[Any, str | None]:
    native = _native_activation(name)
    if native is not None:
        note = f"activation {name} -> tf-keras {native}" if native != name else None
        return tfk.layers.Activation(native, name=layer_name), note
    if name in ACTIVATIONS:
        cls = custom_layers()["ShopLensActivation"]
        return cls(name, name=layer_name), f"activation {name} -> ShopLensActivation (Keras 3 formula)"
    raise ConversionError(f"cannot bridge layer {layer_name!r}: activation {name!r} is unknown to tf-keras")


def _translate_op(call: Call) -> Translated:
    tfk = tf_keras()
    op = _OPS.get(call.class_name)
    if op is None or len(call.args) != 2 or call.kwargs:
        raise ConversionError(
            f"cannot bridge {call.where!r}: the Keras 3 operation {call.class_name} "
            f"({call.module}) has no tf-keras equivalent here; express it with a Keras layer"
        )
    a, b = call.args
    if isinstance(a, Ref) and isinstance(b, Ref):
        if op in _MERGE:
            layer = getattr(tfk.layers, _MERGE[op])(name=call.name)
            return Translated(layer, lambda args, kw: layer(list(args)), f"operation {op} -> {_MERGE[op]}")
        layer = custom_layers()["BinaryOp"](op, name=call.name)
        return Translated(layer, lambda args, kw: layer(list(args)), f"operation {op} -> BinaryOp")
    tensor_first = isinstance(a, Ref)
    const = b if tensor_first else a
    if isinstance(const, dict) and const.get("class_name") == "__numpy__":
        const = const.get("config", {}).get("value")
    try:
        value = np.asarray(const, np.float32).tolist()
    except (TypeError, ValueError):
        raise ConversionError(f"cannot bridge {call.where!r}: operand {const!r} is not a constant") from None
    layer = custom_layers()["ConstantOp"](op, value, tensor_first, name=call.name)

    def apply(args: list[Any], kw: dict[str, Any]) -> Any:
        return layer(args[0] if tensor_first else args[1])

    return Translated(layer, apply, f"operation {op} with a constant -> ConstantOp")


def translate(call: Call, dropped: list[str]) -> Translated:
    """The tf-keras layer for one Keras 3 layer call (see the module docstring)."""
    tfk = tf_keras()
    if call.is_op:
        return _translate_op(call)
    cfg = _clean(call.config)
    cfg["name"] = call.name
    cls = call.class_name
    if cls in _CONVNEXT_LAYERS and "applications" in call.module:
        custom = custom_layers()[cls]
        keys = ("init_values", "projection_dim") if cls == "LayerScale" else ("drop_path_rate",)
        layer = custom(*(cfg[k] for k in keys), name=call.name)
        return Translated(layer, lambda args, kw: layer(*args, **kw), f"{cls} -> ShopLens {cls}")
    if cls == "Activation":
        name = _activation_name(cfg.get("activation"), call.where)
        layer, note = _activation_layer(tfk, str(name), call.name)
        return Translated(layer, lambda args, kw: layer(*args, **kw), note)
    act_after = None
    note = None
    if "activation" in cfg and cfg["activation"] is not None:
        name = str(_activation_name(cfg["activation"], call.where))
        native = _native_activation(name)
        if native is None:
            cfg["activation"] = "linear"
            act_after, note = _activation_layer(tfk, name, f"{call.name}_activation")
            note = f"{note}, applied after the layer"
        else:
            if native != name:
                note = f"activation {name} -> tf-keras {native}"
            cfg["activation"] = native
    layer = _build(tfk, cls, cfg, call.where, dropped)
    if act_after is None:
        return Translated(layer, lambda args, kw: layer(*args, **kw), note)
    return Translated(layer, lambda args, kw: act_after(layer(*args, **kw)), note)
