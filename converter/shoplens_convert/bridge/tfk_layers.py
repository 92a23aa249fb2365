"""tf-keras layers for what Keras 3 models use and tf-keras lacks (or computes differently).

* activations: ``hard_silu``/``hard_swish`` (MobileNetV3), ``hard_sigmoid`` (Keras 3 uses
  ``relu6(x + 3) / 6``; tf-keras's has slope 0.2, a silent 0.08 difference), and the other Keras 3
  activations tf-keras does not know;
* ``x + c``, ``x * c``, ``x / y``...: Keras 3 operation nodes in functional graphs (MobileNetV3's
  hard sigmoid is ``ReLU(6)(x + 3) * (1/6)``);
* ConvNeXt's ``LayerScale`` and ``StochasticDepth``.

Every class is registered under the package ``ShopLens`` so that cloning (pruning, QAT) and
saving work. They are built on first use: importing this module does not import TensorFlow.
"""

from __future__ import annotations

from typing import Any

from shoplens_convert._tf import tensorflow, tf_keras

__all__ = ["ACTIVATIONS", "custom_layers"]

# Keras 3 activation names that tf-keras lacks or computes differently; each maps to a formula below
ACTIVATIONS = (
    "hard_silu", "hard_swish", "hard_sigmoid", "hard_tanh", "celu", "log_sigmoid", "tanh_shrink",
    "squareplus", "soft_shrink", "hard_shrink", "sparse_plus",
)  # fmt: skip

_CACHE: dict[str, type] = {}


def _activation_fn(name: str) -> Any:
    tf = tensorflow()

    def hard_sigmoid(x: Any) -> Any:
        return tf.nn.relu6(x + 3.0) * (1.0 / 6.0)

    fns = {
        # x * relu6(x + 3) / 6: the TFLite converter fuses this pattern into one HARD_SWISH op
        "hard_silu": lambda x: x * tf.nn.relu6(x + 3.0) * (1.0 / 6.0),
        "hard_swish": lambda x: x * tf.nn.relu6(x + 3.0) * (1.0 / 6.0),
        "hard_sigmoid": hard_sigmoid,
        "hard_tanh": lambda x: tf.clip_by_value(x, -1.0, 1.0),
        "celu": lambda x: tf.nn.relu(x) + tf.minimum(0.0, tf.math.expm1(x)),  # alpha = 1
        "log_sigmoid": lambda x: -tf.nn.softplus(-x),
        "tanh_shrink": lambda x: x - tf.tanh(x),
        "squareplus": lambda x: (x + tf.sqrt(x * x + 4.0)) * 0.5,  # b = 4
        "soft_shrink": lambda x: tf.where(x > 0.5, x - 0.5, tf.where(x < -0.5, x + 0.5, tf.zeros_like(x))),
        "hard_shrink": lambda x: tf.where(tf.abs(x) > 0.5, x, tf.zeros_like(x)),
        "sparse_plus": lambda x: tf.where(
            x <= -1.0, tf.zeros_like(x), tf.where(x >= 1.0, x, 0.25 * (x + 1.0) * (x + 1.0))
        ),
    }
    return fns[name]


def custom_layers() -> dict[str, type]:
    """The ShopLens tf-keras layer classes by name (for ``custom_objects`` and quantize scopes)."""
    if _CACHE:
        return dict(_CACHE)
    tfk = tf_keras()
    tf = tensorflow()
    register = tfk.saving.register_keras_serializable(package="ShopLens")

    @register
    class ShopLensActivation(tfk.layers.Layer):  # type: ignore[misc, name-defined]
        """A Keras 3 activation that tf-keras lacks, with Keras 3's formula."""

        def __init__(self, activation: str, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            if activation not in ACTIVATIONS:
                raise ValueError(f"unknown ShopLens activation {activation!r}")
            self.activation = activation
            self._fn = _activation_fn(activation)

        def call(self, x: Any) -> Any:
            return self._fn(x)

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "activation": self.activation}

    @register
    class ConstantOp(tfk.layers.Layer):  # type: ignore[misc, name-defined]
        """``x op c`` (or ``c op x``) for a constant ``c``: a Keras 3 operation node."""

        OPS = ("add", "subtract", "multiply", "divide", "maximum", "minimum", "power")

        def __init__(self, op: str, value: Any, tensor_first: bool = True, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            if op not in self.OPS:
                raise ValueError(f"unknown constant op {op!r}")
            self.op, self.value, self.tensor_first = op, value, bool(tensor_first)

        def call(self, x: Any) -> Any:
            c = tf.constant(self.value, dtype=x.dtype)
            a, b = (x, c) if self.tensor_first else (c, x)
            return _binary(tf, self.op, a, b)

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "op": self.op, "value": self.value,
                    "tensor_first": self.tensor_first}  # fmt: skip

    @register
    class BinaryOp(tfk.layers.Layer):  # type: ignore[misc, name-defined]
        """``x op y`` for two tensors (broadcasting), where tf-keras has no merge layer."""

        def __init__(self, op: str, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            if op not in ConstantOp.OPS:
                raise ValueError(f"unknown binary op {op!r}")
            self.op = op

        def call(self, inputs: Any) -> Any:
            a, b = inputs
            return _binary(tf, self.op, a, b)

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "op": self.op}

    @register
    class LayerScale(tfk.layers.Layer):  # type: ignore[misc, name-defined]
        """ConvNeXt's learned per-channel scale of a residual branch: ``x * gamma``."""

        def __init__(self, init_values: float, projection_dim: int, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.init_values, self.projection_dim = float(init_values), int(projection_dim)

        def build(self, input_shape: Any) -> None:
            self.gamma = self.add_weight(
                name="gamma", shape=(self.projection_dim,),
                initializer=tfk.initializers.Constant(self.init_values), trainable=True,
            )  # fmt: skip
            super().build(input_shape)

        def call(self, x: Any) -> Any:
            return x * self.gamma

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "init_values": self.init_values,
                    "projection_dim": self.projection_dim}  # fmt: skip

    @register
    class StochasticDepth(tfk.layers.Layer):  # type: ignore[misc, name-defined]
        """Drops a residual branch per sample while training; the identity at inference."""

        def __init__(self, drop_path_rate: float, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.drop_path_rate = float(drop_path_rate)

        def call(self, x: Any, training: Any = None) -> Any:
            if not training or self.drop_path_rate <= 0:
                return x
            keep = 1.0 - self.drop_path_rate
            shape = tf.concat([tf.shape(x)[:1], tf.ones([tf.rank(x) - 1], tf.int32)], 0)
            mask = tf.floor(keep + tf.random.uniform(shape, dtype=x.dtype))
            return x / keep * mask

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "drop_path_rate": self.drop_path_rate}

    for cls in (ShopLensActivation, ConstantOp, BinaryOp, LayerScale, StochasticDepth):
        _CACHE[cls.__name__] = cls
    return dict(_CACHE)


def _binary(tf: Any, op: str, a: Any, b: Any) -> Any:
    return {
        "add": tf.add, "subtract": tf.subtract, "multiply": tf.multiply, "divide": tf.math.truediv,
        "maximum": tf.maximum, "minimum": tf.minimum, "power": tf.pow,
    }[op](a, b)  # fmt: skip
