"""Bridge a Keras 3 model into tf-keras (Keras 2), which TFMOT needs for pruning and QAT.

tf-keras cannot read a Keras 3 file, and the two serialised configs differ (``batch_shape``,
dtype-policy objects, the call graph recorded as ``__keras_tensor__`` arguments, operation nodes
such as ``x + 3.0``). So the bridge does not translate files. It

1. flattens the Keras 3 graph (:mod:`.graph`): nested models (ConvNeXt's stem, a backbone inside
   ``Sequential([backbone, pooling, head])``) become the calls of their own layers, at any depth;
2. optionally takes the in-model input preprocessing out (:mod:`.prefix`), so the pipeline can
   compose it into the preprocessing contract;
3. rebuilds each layer with tf-keras (:mod:`.translate`; what tf-keras lacks comes from
   :mod:`.tfk_layers`), calls it on the bridged tensors exactly as the source did, and copies the
   weights layer by layer.

No code from the source file runs here: layers are built from their registered class names.

    >>> bridged = bridge_to_tf_keras(keras3_model)            # doctest: +SKIP
    >>> max_output_difference(keras3_model, bridged.model, x)  # doctest: +SKIP
    3.2e-07
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shoplens.errors import ConversionError
from shoplens_convert._tf import tf_keras
from shoplens_convert.bridge.graph import INPUT, FlatGraph, Ref, flatten_model
from shoplens_convert.bridge.prefix import InputPrefix, check_not_normalized_twice, find_input_prefix
from shoplens_convert.bridge.tfk_layers import custom_layers
from shoplens_convert.bridge.translate import translate

__all__ = [
    "BridgeResult",
    "FlatGraph",
    "InputPrefix",
    "bridge_to_tf_keras",
    "check_not_normalized_twice",
    "custom_layers",
    "find_input_prefix",
    "flatten_model",
    "max_output_difference",
]


@dataclass
class BridgeResult:
    """The tf-keras model and what the bridge did to get it (the conversion report shows it)."""

    model: Any  # tf_keras.Model
    dropped_keys: dict[str, list[str]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)  # layer -> how it was bridged, when not 1:1
    nested: list[str] = field(default_factory=list)  # nested models flattened into the graph
    renamed: dict[str, str] = field(default_factory=dict)  # new layer name -> nested path
    prefix: InputPrefix | None = None  # the input preprocessing taken out of the model, if asked

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": len(self.model.layers),
            "nested_models_flattened": list(self.nested),
            "renamed_layers": dict(self.renamed),
            "bridged_as": dict(self.notes),
            "dropped_config_keys": dict(self.dropped_keys),
            "input_preprocessing_removed": self.prefix.to_dict() if self.prefix else None,
        }


def bridge_to_tf_keras(
    model: Any,
    *,
    input_transform: Callable[[Any], Any] | None = None,
    remove_input_prefix: bool = False,
    graph: FlatGraph | None = None,
) -> BridgeResult:
    """A flat tf-keras functional model with the same computation and weights as ``model``.

    Args:
      model: a Keras 3 model (Functional or Sequential, nested models allowed; one input).
      input_transform: tf-keras tensor -> tensor, inserted between the input and the first layers
        (the per-channel normalization fold uses it).
      remove_input_prefix: leave out the affine input preprocessing found by
        :func:`find_input_prefix`; the caller must then give the model prefix-applied input (and
        records it in the contract, see :meth:`InputPrefix.compose`).
      graph: the model's :func:`flatten_model` graph, when the caller already has it.

    Returns:
      A :class:`BridgeResult`; ``.model`` is the tf-keras model.

    Raises:
      ConversionError: a layer, activation or operation tf-keras cannot express (the message names
        the layer and its class), or weights that do not fit.
    """
    tfk = tf_keras()
    g = graph if graph is not None else flatten_model(model)
    if len(g.input_specs) != 1:
        raise ConversionError(f"bridge: {g.name} has {len(g.input_specs)} inputs; ShopLens models have one")
    prefix = find_input_prefix(g) if remove_input_prefix else None
    if prefix is not None and not prefix.composable:
        prefix = None  # a negative scale: no contract expresses it, so the model keeps it
    skip = set(prefix.calls) if prefix else set()
    shape, dtype, in_name = g.input_specs[0]
    inp = tfk.Input(batch_shape=shape, dtype=dtype, name=in_name)
    start = input_transform(inp) if input_transform is not None else inp
    produced: dict[Ref, Any] = {Ref(INPUT, 0): start}
    layers: dict[str, tuple[Any, Any]] = {}  # flat name -> (tf-keras layer, Keras 3 source)
    applies: dict[str, Any] = {}
    result = BridgeResult(None, nested=list(g.nested), renamed=dict(g.renamed), prefix=prefix)

    def resolve(obj: Any) -> Any:
        if isinstance(obj, Ref):
            return produced[obj]
        if isinstance(obj, list):
            return [resolve(v) for v in obj]
        if isinstance(obj, tuple):
            return tuple(resolve(v) for v in obj)
        if isinstance(obj, dict):
            return {k: resolve(v) for k, v in obj.items()}
        return obj

    for i, call in enumerate(g.calls):
        if i in skip:
            produced[Ref(i, 0)] = produced[next(a for a in call.args if isinstance(a, Ref))]
            continue
        if call.name not in layers:
            dropped: list[str] = []
            t = translate(call, dropped)
            if dropped:
                result.dropped_keys[call.name] = sorted(set(dropped))
            if t.note:
                result.notes[call.name] = t.note
            layers[call.name] = (t.layer, call.source)
            applies[call.name] = t.apply
        try:
            out = applies[call.name](resolve(call.args), resolve(call.kwargs))
        except ConversionError:
            raise
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConversionError(
                f"cannot bridge layer {call.where!r} ({call.class_name}): tf-keras failed to call it: "
                f"{first[:200]}"
            ) from None
        for k, t_out in enumerate(out if isinstance(out, (list, tuple)) else [out]):
            produced[Ref(i, k)] = t_out
    outputs = [produced[r] for r in g.outputs]
    bridged = tfk.Model(inp, outputs[0] if len(outputs) == 1 else outputs, name=g.name)
    for name, (layer, source) in layers.items():
        src = [np.asarray(w) for w in source.get_weights()] if hasattr(source, "get_weights") else []
        dst = layer.get_weights()
        if len(src) != len(dst) or any(a.shape != b.shape for a, b in zip(src, dst, strict=True)):
            raise ConversionError(
                f"bridge: layer {name!r} has weights {[w.shape for w in src]} in Keras 3 "
                f"but {[w.shape for w in dst]} in tf-keras"
            )
        if src:
            layer.set_weights(src)
    result.model = bridged
    return result


def max_output_difference(a: Any, b: Any, x: np.ndarray, x_b: np.ndarray | None = None) -> float:
    """Largest absolute difference between two models' outputs (inference mode); ``x_b`` is the
    input of ``b`` when it differs (a model whose input preprocessing was taken out)."""
    ya = np.asarray(a(x, training=False))
    yb = np.asarray(b(x if x_b is None else x_b, training=False))
    return float(np.max(np.abs(ya - yb)))
