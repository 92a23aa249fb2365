"""Fold input normalization (and optionally the BGR->RGB swap) into the model.

A 1x1 convolution named ``shoplens_input_norm`` goes in front of the network: output channel j is
``(x[p(j)] - mean_j) / std_j``, with ``p`` the channel reversal when the swap is baked in. It is a
plain Conv2D, so every TFLite toolchain (and the Edge TPU) runs it, and int8 per-channel weights
represent it exactly. The model then takes pixel values in [0, 255]; with uint8 I/O its input
quantization is (scale 1, zero point 0), so a device can feed raw camera bytes.

Used for ``--bake-preprocessing`` and whenever a contract has per-channel mean/std, which
standard TFLite metadata (and MediaPipe) cannot express.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from shoplens.contract import ColorOrder, PreprocessContract
from shoplens.errors import UsageError
from shoplens_convert._tf import tf_keras

__all__ = ["FOLD_LAYER", "InputFold", "plan_fold", "reexpress_inputs"]

FOLD_LAYER = "shoplens_input_norm"


@dataclass(frozen=True)
class InputFold:
    """A planned fold: the weights of the 1x1 conv and the contract the folded model has."""

    kernel: np.ndarray  # (1, 1, C, C)
    bias: np.ndarray  # (C,)
    contract: PreprocessContract
    reason: str

    def apply(self, tensor: Any) -> Any:
        """Call the fold layer (tf-keras) on the bridged input tensor."""
        tfk = tf_keras()
        c = self.kernel.shape[-1]
        layer = tfk.layers.Conv2D(c, 1, use_bias=True, name=FOLD_LAYER)
        out = layer(tensor)
        layer.set_weights([self.kernel, self.bias])
        return out


def plan_fold(contract: PreprocessContract, *, bake: bool, swap_bgr: bool = False) -> InputFold | None:
    """The fold for this contract, or None when the model can keep its normalization."""
    if swap_bgr and not bake:
        raise UsageError("--bake-bgr needs --bake-preprocessing")
    if swap_bgr and contract.channels != 3:
        raise UsageError("--bake-bgr needs a 3-channel model")
    if not bake and not contract.per_channel:
        return None
    c = contract.channels
    mean = np.asarray(contract.mean, np.float64)
    std = np.asarray(contract.std, np.float64)
    kernel = np.zeros((1, 1, c, c), np.float32)
    order = list(range(c))[::-1] if swap_bgr else list(range(c))  # input channel feeding output j
    for j in range(c):
        kernel[0, 0, order[j], j] = 1.0 / std[j]
    bias = (-mean / std).astype(np.float32)
    new_order = contract.color_order
    if swap_bgr:
        new_order = ColorOrder.BGR if contract.color_order is ColorOrder.RGB else ColorOrder.RGB
    folded = contract.replace(mean=(0.0,), std=(1.0,), color_order=new_order)
    what = []
    if contract.per_channel:
        what.append("per-channel normalization")
    elif bake:
        what.append("normalization")
    if swap_bgr:
        what.append(f"the {new_order.value}->{contract.color_order.value} channel swap")
    return InputFold(kernel, bias, folded, " and ".join(what) + " folded into the model")


def reexpress_inputs(x: np.ndarray, old: PreprocessContract, new: PreprocessContract) -> np.ndarray:
    """Inputs made with ``old`` re-expressed under ``new`` (exact: both are affine in pixels)."""
    if old == new:
        return x
    mean_o, std_o = np.asarray(old.mean, np.float32), np.asarray(old.std, np.float32)
    mean_n, std_n = np.asarray(new.mean, np.float32), np.asarray(new.std, np.float32)
    pixels = x * std_o + mean_o
    if new.color_order is not old.color_order and x.shape[-1] == 3:
        pixels = pixels[..., ::-1]
    return np.ascontiguousarray((pixels - mean_n) / std_n, dtype=np.float32)
