"""In-model preprocessing at the input: ``Rescaling``, ``Normalization`` and constant arithmetic.

Many Keras Applications models normalize raw pixels themselves (MobileNetV3:
``Rescaling(1/127.5, offset=-1)``; EfficientNet: ``Rescaling(1/255)`` then ``Normalization``;
ConvNeXt: ``Normalization`` with the ImageNet mean and variance). TFMOT cannot quantize those
layers, and the preprocessing contract must not normalize a second time. This module finds the
chain of per-channel affine steps that starts at the model input, so the bridge can take it out
of the graph and the pipeline can compose it into the contract (one preprocessing contract,
exact: both are affine in the pixel value).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from shoplens.contract import PreprocessContract
from shoplens.errors import UsageError
from shoplens_convert.bridge.graph import Call, FlatGraph, Ref, input_ref

__all__ = ["InputPrefix", "check_not_normalized_twice", "find_input_prefix"]

_ARITHMETIC = ("Add", "Subtract", "Multiply", "Divide", "TrueDivide")


@dataclass(frozen=True)
class InputPrefix:
    """``y = scale * x + offset`` per channel: what the model does to its input before its first
    real layer, and which flat-graph calls do it."""

    scale: tuple[float, ...]
    offset: tuple[float, ...]
    calls: tuple[int, ...]
    steps: tuple[str, ...]  # "rescaling: Rescaling(scale=0.00784, offset=-1)"

    @property
    def identity(self) -> bool:
        return all(abs(a - 1) < 1e-7 for a in self.scale) and all(abs(b) < 1e-7 for b in self.offset)

    @property
    def normalizes(self) -> bool:
        """It scales raw pixel values down (by 2x or more), as a normalization of [0, 255] does."""
        return max(abs(a) for a in self.scale) <= 0.5

    @property
    def composable(self) -> bool:
        """A contract can express it (a std must stay positive)."""
        return all(a > 0 for a in self.scale)

    def compose(self, contract: PreprocessContract) -> PreprocessContract:
        """The contract that gives the model's first real layer what contract + prefix gave it.

        contract: ``v = (p - m) / s``; prefix: ``y = a v + b``; so ``y = (p - m') / s'`` with
        ``s' = s / a`` and ``m' = m - b s / a``.
        """
        c = contract.channels
        a = _per_channel(self.scale, c)
        b = _per_channel(self.offset, c)
        m = np.asarray(contract.mean, np.float64)
        s = np.asarray(contract.std, np.float64)
        std = s / a
        mean = m - b * s / a
        return contract.replace(mean=tuple(float(v) for v in mean), std=tuple(float(v) for v in std))

    def to_dict(self) -> dict[str, Any]:
        return {"steps": list(self.steps), "scale": list(self.scale), "offset": list(self.offset)}


def _per_channel(v: tuple[float, ...], c: int) -> np.ndarray:
    arr = np.asarray(v, np.float64)
    return np.full(c, float(arr[0])) if arr.size == 1 else arr


def _constant(v: Any) -> np.ndarray | None:
    """A constant operand of a Keras 3 operation (number, list, or serialised numpy array)."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return np.asarray([float(v)])
    if isinstance(v, dict) and v.get("class_name") == "__numpy__":
        v = v.get("config", {}).get("value")
    if isinstance(v, (list, tuple)) and not any(isinstance(x, Ref) for x in np.ravel(np.asarray(v, object))):
        try:
            return np.asarray(v, np.float64).reshape(-1)
        except (TypeError, ValueError):
            return None
    return None


def _numpy(v: Any) -> np.ndarray:
    from shoplens_convert._tf import keras3

    return np.asarray(keras3().ops.convert_to_numpy(v), np.float64).reshape(-1)


def _affine(call: Call, ref: Ref, channels: int) -> tuple[np.ndarray, np.ndarray, str] | None:
    """(scale, offset, description) when ``call`` is a per-channel affine step of ``ref``."""
    cfg = call.config
    tensors = [a for a in call.args if isinstance(a, Ref)]
    if tensors != [ref] or call.kwargs:
        return None
    if call.class_name == "Rescaling" and not call.is_op:
        a = np.asarray(cfg.get("scale", 1.0), np.float64).reshape(-1)
        b = np.asarray(cfg.get("offset", 0.0), np.float64).reshape(-1)
        if a.size not in (1, channels) or b.size not in (1, channels):
            return None
        return a, b, f"Rescaling(scale={_fmt(a)}, offset={_fmt(b)})"
    if call.class_name == "Normalization" and not call.is_op:
        axis = cfg.get("axis", -1)
        axis = axis if isinstance(axis, (list, tuple)) else [axis]
        if list(axis) not in ([-1], [3]) or cfg.get("invert"):
            return None
        try:
            mean, var = _numpy(call.source.mean), _numpy(call.source.variance)
        except (AttributeError, TypeError, ValueError):
            return None
        if mean.size not in (1, channels) or var.size not in (1, channels):
            return None
        from shoplens_convert._tf import keras3

        a = 1.0 / np.maximum(np.sqrt(var), keras3().backend.epsilon())
        return a, -mean * a, f"Normalization(mean={_fmt(mean)}, variance={_fmt(var)})"
    if call.is_op and call.class_name in _ARITHMETIC and len(call.args) == 2:
        first = isinstance(call.args[0], Ref)
        c = _constant(call.args[1] if first else call.args[0])
        if c is None or c.size not in (1, channels):
            return None
        one, zero = np.ones_like(c), np.zeros_like(c)
        op = call.class_name
        word = {"Add": "+", "Subtract": "-", "Multiply": "*", "Divide": "/", "TrueDivide": "/"}[op]
        text = f"x {word} {_fmt(c)}" if first else f"{_fmt(c)} {word} x"
        if op == "Add":
            return one, c, text
        if op == "Subtract":
            return (one, -c, text) if first else (-one, c, text)
        if op == "Multiply":
            return c, zero, text
        if first and np.all(c != 0):
            return 1.0 / c, zero, text
    return None


def _fmt(v: np.ndarray) -> str:
    vals = [f"{x:.6g}" for x in np.asarray(v).reshape(-1)]
    return vals[0] if len(set(vals)) == 1 else "[" + ", ".join(vals) + "]"


def find_input_prefix(graph: FlatGraph) -> InputPrefix | None:
    """The affine steps that the model applies to its only input before anything else, or None.

    A step joins the prefix only when its input is read by nothing else, so taking the chain out
    of the graph cannot change any other path.
    """
    if len(graph.input_specs) != 1:
        return None
    channels = int(graph.input_specs[0][0][-1] or 1)
    cur = input_ref(0)
    a = np.ones(channels)
    b = np.zeros(channels)
    calls: list[int] = []
    steps: list[str] = []
    while graph.uses(cur) == 1:
        cons = graph.consumers(cur)
        if len(cons) != 1:
            break
        call = graph.calls[cons[0]]
        if sum(1 for c in graph.calls if c.name == call.name) != 1:
            break  # a shared layer is used elsewhere too
        step = _affine(call, cur, channels)
        if step is None:
            break
        sa, sb, text = step
        a, b = sa * a, sa * b + sb
        calls.append(cons[0])
        steps.append(f"{call.where}: {text}")
        cur = Ref(cons[0], 0)
    if not calls:
        return None
    return InputPrefix(tuple(float(v) for v in a), tuple(float(v) for v in b), tuple(calls), tuple(steps))


def check_not_normalized_twice(
    contract: PreprocessContract, prefix: InputPrefix | None, model_name: str, *, allow: bool = False
) -> None:
    """UsageError when the model normalizes raw pixels itself and the contract normalizes too.

    Handing ``preprocess_input`` output to a model built with ``include_preprocessing=True`` is the
    classic form of this mistake: the network then sees near-constant input.
    """
    if prefix is None or prefix.identity or not prefix.normalizes or allow:
        return
    if min(contract.std) < 2.0:  # the contract keeps (roughly) raw pixel values
        return
    rng = contract.value_range
    said = f"[{rng[0]:g}, {rng[1]:g}]" if rng else f"mean {list(contract.mean)} std {list(contract.std)}"
    raise UsageError(
        f"{model_name} normalizes its input itself ({'; '.join(s.split(': ', 1)[1] for s in prefix.steps)}) "
        f"and the contract normalizes too ({said}): pixels would be normalized twice. Give a contract "
        "with mean 0 and std 1 (raw pixels, [0, 255]) so the model's own preprocessing applies, or "
        "pass --allow-double-normalization if the model was trained on twice-normalized input"
    )
