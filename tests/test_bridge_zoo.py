"""The Keras 3 -> tf-keras bridge on what Keras Applications models contain (real layers, no mocks).

Every activation, operation node and layer the bridge maps is checked numerically against Keras 3
on real inputs; nested models at any depth, the input-preprocessing prefix and its composition
into the contract, and the refusals (two inputs, an operation tf-keras cannot express, a contract
that normalizes a second time) are checked on small models built here.
"""

from __future__ import annotations

import numpy as np
import pytest

from shoplens.contract import PreprocessContract
from shoplens.errors import ConversionError, UsageError
from shoplens_convert.bridge import (
    bridge_to_tf_keras,
    check_not_normalized_twice,
    find_input_prefix,
    flatten_model,
    max_output_difference,
)
from shoplens_convert.bridge.tfk_layers import ACTIVATIONS

keras = pytest.importorskip("keras")

KERAS3_ACTIVATIONS = sorted(
    {*ACTIVATIONS, "relu", "relu6", "silu", "swish", "gelu", "sigmoid", "tanh", "elu", "selu", "softplus",
     "softsign", "leaky_relu", "mish", "linear", "softmax", "log_softmax", "exponential"}
)  # fmt: skip


def _x(shape: tuple[int, ...], lo: float = -6.0, hi: float = 6.0, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(lo, hi, shape).astype(np.float32)


@pytest.mark.parametrize("name", KERAS3_ACTIVATIONS)
def test_every_activation_matches_keras3(name: str) -> None:
    """As an Activation layer and as a Conv2D's own activation; hard_sigmoid is the trap (tf-keras
    has slope 0.2, Keras 3 relu6(x + 3) / 6)."""
    inp = keras.Input((6, 6, 4))
    y = keras.layers.Activation(name)(inp)
    y = keras.layers.Conv2D(4, 1, activation=name if name not in ("softmax", "log_softmax") else None)(y)
    model = keras.Model(inp, y)
    x = _x((3, 6, 6, 4), -3.0, 3.0)
    bridged = bridge_to_tf_keras(model).model
    assert type(bridged).__module__.startswith("tf_keras")
    scale = max(1.0, float(np.max(np.abs(np.asarray(model(x))))))
    assert max_output_difference(model, bridged, x) < 1e-5 * scale


def test_keras3_operation_nodes_and_broadcast_multiply() -> None:
    """MobileNetV3's hard sigmoid is ``ReLU(6)(x + 3) * (1/6)`` as operation nodes; SE multiplies a
    (N, H, W, C) tensor by (N, 1, 1, C); also tensor-tensor and constant-first forms."""
    inp = keras.Input((8, 8, 4))
    s = keras.layers.GlobalAveragePooling2D(keepdims=True)(inp)
    gate = keras.layers.ReLU(6.0)(s + 3.0) * (1.0 / 6.0)
    y = keras.layers.Multiply()([inp, gate])
    y = 2.0 - y
    y = y / 4.0 + y * y
    y = keras.layers.Subtract()([y, inp])
    model = keras.Model(inp, y)
    x = _x((2, 8, 8, 4))
    r = bridge_to_tf_keras(model)
    assert max_output_difference(model, r.model, x) < 1e-5
    assert any("ConstantOp" in v for v in r.notes.values())


def test_nested_models_at_any_depth_keep_names_and_weights() -> None:
    """A functional backbone inside a Sequential inside a functional model (transfer learning)."""
    keras.utils.set_random_seed(1)
    inner_in = keras.Input((16, 16, 3))
    z = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inner_in)
    z = keras.layers.LayerNormalization(name="ln")(z)
    z = keras.layers.Activation("gelu", name="gelu")(z)
    backbone = keras.Model(inner_in, z, name="backbone")
    block = keras.Sequential([keras.Input((16, 16, 3)), backbone, keras.layers.Conv2D(8, 1, name="stem_2")],
                             name="block")  # fmt: skip
    outer_in = keras.Input((16, 16, 3))
    y = block(outer_in)
    y = keras.layers.GlobalAveragePooling2D()(y)
    model = keras.Model(outer_in, keras.layers.Dense(5, name="head")(y), name="transfer")
    r = bridge_to_tf_keras(model)
    names = {layer.name for layer in r.model.layers}
    assert {"stem", "ln", "gelu", "stem_2", "head"} <= names  # the user's layer names survive
    assert r.nested == ["block", "block/backbone"]
    assert max_output_difference(model, r.model, _x((2, 16, 16, 3), 0, 1)) < 1e-5
    assert sum(w.size for w in r.model.get_weights()) == model.count_params()


def test_convnext_layerscale_and_stochastic_depth_bridge() -> None:
    from keras.src.applications import convnext

    model = convnext.ConvNeXt([1, 1, 1, 1], [8, 16, 24, 32], drop_path_rate=0.2, default_size=32,
                              weights=None, input_shape=(32, 32, 3), classes=4, name="cn")  # fmt: skip
    r = bridge_to_tf_keras(model)
    assert any("LayerScale" in v for v in r.notes.values())
    assert any("StochasticDepth" in v for v in r.notes.values())
    assert max_output_difference(model, r.model, _x((2, 32, 32, 3), 0, 255)) < 1e-4


def test_input_prefix_is_found_and_composed_exactly() -> None:
    """Rescaling then a per-channel Normalization, then constant arithmetic: one affine map that
    the contract absorbs; the bridged model without it, fed the composed contract's input, equals
    the source fed raw pixels."""
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inp)
    x = keras.layers.Normalization(mean=[0.485, 0.456, 0.406], variance=[0.052, 0.05, 0.0506])(x)
    x = x * 2.0
    y = keras.layers.Conv2D(4, 3)(x)
    model = keras.Model(inp, keras.layers.Flatten()(y))
    prefix = find_input_prefix(flatten_model(model))
    assert prefix is not None and len(prefix.steps) == 3 and prefix.normalizes
    raw = PreprocessContract(8, 8, mean=(0.0,), std=(1.0,))
    composed = prefix.compose(raw)
    assert composed.per_channel
    r = bridge_to_tf_keras(model, remove_input_prefix=True)
    assert r.prefix is not None and not any(type(ly).__name__ == "Normalization" for ly in r.model.layers)
    pixels = _x((2, 8, 8, 3), 0, 255)
    x_comp = (pixels - np.asarray(composed.mean, np.float32)) / np.asarray(composed.std, np.float32)
    assert max_output_difference(model, r.model, pixels, x_comp) < 1e-4


def test_normalizing_twice_is_refused() -> None:
    inp = keras.Input((8, 8, 3))
    model = keras.Model(inp, keras.layers.Conv2D(2, 1)(keras.layers.Rescaling(1 / 127.5, offset=-1)(inp)))
    prefix = find_input_prefix(flatten_model(model))
    minus_one_one = PreprocessContract.from_range(8, 8, -1.0, 1.0)
    with pytest.raises(UsageError, match="normalized twice"):
        check_not_normalized_twice(minus_one_one, prefix, "m.keras")
    check_not_normalized_twice(minus_one_one, prefix, "m.keras", allow=True)
    check_not_normalized_twice(PreprocessContract(8, 8, mean=(0.0,), std=(1.0,)), prefix, "m.keras")


def test_refusals_name_the_layer() -> None:
    a, b = keras.Input((4, 4, 3)), keras.Input((4, 4, 3))
    two = keras.Model([a, b], keras.layers.Add()([a, b]))
    with pytest.raises(ConversionError, match="2 inputs"):
        bridge_to_tf_keras(two)
    inp = keras.Input((4, 4, 3))
    y = keras.ops.cumsum(inp, axis=1)  # an operation the bridge does not map
    with pytest.raises(ConversionError, match=r"cannot bridge .*Cumsum"):
        bridge_to_tf_keras(keras.Model(inp, y))


@pytest.mark.parametrize("name", sorted(__import__("benchmarks.zoo", fromlist=["MINI"]).MINI))
def test_every_zoo_family_bridges_and_wraps_for_qat(name: str) -> None:
    """Each family's own builder (reduced size), stock and as a transfer model: the bridged model
    equals its Keras 3 source to 1e-4 (relative), and TFMOT's QAT and PQAT wrapping accept it."""
    from benchmarks import zoo
    from shoplens_convert._tf import tfmot
    from shoplens_convert.qat import _annotate

    keras.utils.set_random_seed(0)
    arch = zoo.MINI[name]
    stock = arch.build(True)
    head = [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10, activation="softmax")]
    transfer = keras.Sequential([keras.Input((32, 32, 3)), arch.build(False), *head])
    x = _x((2, 32, 32, 3), 0.0, 255.0)
    q = tfmot().quantization.keras
    default = q.default_8bit.Default8BitQuantizeScheme().get_quantize_registry()
    pqat = tfmot().experimental.combine.Default8BitPrunePreserveQuantizeScheme().get_quantize_registry()
    for model in (stock, transfer):
        r = bridge_to_tf_keras(model)
        scale = max(1.0, float(np.max(np.abs(np.asarray(model(x))))))
        assert max_output_difference(model, r.model, x) <= 1e-4 * scale
        for registries in ([default], [pqat, default]):
            annotated, _fallback = _annotate(r.model, registries)
            assert len(annotated.layers) == len(r.model.layers)
