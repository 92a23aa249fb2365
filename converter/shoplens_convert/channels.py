"""Structured (channel) pruning of a Keras 3 functional model: fewer channels, a smaller, faster model.

Magnitude pruning (:mod:`shoplens_convert.prune`) zeroes weights, which only pays after gzip: int8
kernels stay dense. This module removes whole output channels of convolution and dense layers and
the matching input channels downstream, so the converted model has fewer MACs and fewer bytes.

**Channel groups.** Channels that must be removed together form a group: the output channels of a
``Conv2D`` or ``Dense`` layer, followed through every layer that works channel by channel
(``BatchNormalization``, ``DepthwiseConv2D`` with multiplier 1, activations, pooling, padding,
``Dropout``) and merged where an ``Add``, ``Subtract``, ``Maximum`` or ``Multiply`` ties two tensors
channel for channel (a residual block's channels are one group). A group is left whole, and listed
with the reason, when any of its tensors reaches a layer this module cannot slice (``Concatenate``,
``Reshape``, ``Flatten``, ``LayerNormalization``, a nested model, a custom layer) or the model's
output (the classifier keeps its classes, an embedding its dimension).

**Importance.** A channel's score is the L1 norm of the filters that produce it, each producer's
norms divided by their mean so that the producers of a group weigh alike; a group keeps its highest
scores. The same ratio is removed from every prunable group (the uniform baseline), rounded to a
multiple of 4 channels (XNNPACK's int8 kernels work on channel blocks).

**Weights.** The slimmed model is built from the layers' configs with the new widths, and every
weight is copied with the kept channels sliced out of it: kernels on their output and input axes,
biases, BatchNorm's four vectors, depthwise kernels. At ratio 0 the model is the source, exactly.
The caller fine-tunes it (Keras 3, no TFMOT) before quantizing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shoplens.errors import ModelError, UsageError

__all__ = ["ChannelPlan", "ChannelPruneResult", "fine_tune_keras", "macs", "plan_channels", "prune_channels"]

_PRODUCERS = ("Conv2D", "Dense")
_PER_CHANNEL = (
    "BatchNormalization",
    "DepthwiseConv2D",
    "ReLU",
    "Activation",
    "LeakyReLU",
    "PReLU",
    "ELU",
    "Softmax",
    "Dropout",
    "SpatialDropout2D",
    "GaussianDropout",
    "GaussianNoise",
    "ZeroPadding2D",
    "Cropping2D",
    "MaxPooling2D",
    "AveragePooling2D",
    "GlobalAveragePooling2D",
    "GlobalMaxPooling2D",
    "Identity",
    "UpSampling2D",
)
_ELEMENTWISE = ("Add", "Subtract", "Maximum", "Minimum", "Multiply", "Average")
MULTIPLE = 4


class _Groups:
    """Union-find over channel groups, with a reason to keep a group whole."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.whole: dict[int, str] = {}

    def new(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra
            if rb in self.whole:
                self.whole.setdefault(ra, self.whole.pop(rb))
        return ra

    def keep_whole(self, g: int, why: str) -> None:
        self.whole.setdefault(self.find(g), why)


@dataclass
class ChannelPlan:
    """Which channels of which layers go, and why the rest stay."""

    ratio: float
    out_group: dict[str, int]  # layer -> group of its output channels
    in_group: dict[str, int]  # layer -> group of its input channels (producers and per-channel layers)
    producers: dict[int, list[str]]  # group -> the layers that produce its channels
    keep: dict[int, np.ndarray] = field(default_factory=dict)  # group -> kept channel indices
    whole: dict[int, str] = field(default_factory=dict)  # group -> why it is not pruned
    widths: dict[str, int] = field(default_factory=dict)  # producer -> its channels before pruning

    def group_report(self) -> list[dict[str, Any]]:
        rows = []
        for g, names in sorted(self.producers.items()):
            width = self.widths[names[0]]
            kept = len(self.keep[g]) if g in self.keep else width
            why = self.whole.get(g, "pruned by filter L1 norm" if g in self.keep else "")
            rows.append({"layers": names, "channels_before": width, "channels_after": kept, "why": why})
        return rows


def _inbound(layer: Any) -> list[Any]:
    nodes = getattr(layer, "_inbound_nodes", [])
    if len(nodes) != 1:
        raise ModelError(
            f"channel pruning: layer {layer.name!r} is used {len(nodes)} times; shared layers cannot "
            "be sliced (prune without --prune-channels, or rebuild the model without sharing)"
        )
    return [t._keras_history.operation for t in nodes[0].input_tensors]


def plan_channels(
    model: Any,
    ratio: float,
    *,
    multiple: int = MULTIPLE,
    keep: tuple[str, ...] = (),
    ratios: dict[str, float] | None = None,
) -> ChannelPlan:
    """Group the model's channels and choose, per prunable group, the channels to keep (``keep``:
    layers whose output channels stay, e.g. the embedding layer; ``ratios``: a group's own ratio,
    by the name of its first producer, instead of ``ratio``; :mod:`shoplens_convert.channel_budget`)."""
    for r in (ratio, *(ratios or {}).values()):
        if not 0.0 <= r < 1.0:
            raise UsageError(f"--prune-channels must be in [0, 1) (the share of channels removed), got {r}")
    import keras

    if not isinstance(model, keras.Model) or not model.inputs:
        raise ModelError("channel pruning needs a built Keras 3 functional or Sequential model")
    groups = _Groups()
    out_group: dict[str, int] = {}
    in_group: dict[str, int] = {}
    producers: dict[int, list[str]] = {}
    widths: dict[str, int] = {}
    for layer in model.operations:  # layers and the Keras ops between them (x + 3.0 in MobileNetV3)
        kind = type(layer).__name__
        if kind == "InputLayer":
            g = groups.new()
            groups.keep_whole(g, "the model's input")
            out_group[layer.name] = g
            continue
        ins = []
        for parent in _inbound(layer):
            if parent.name not in out_group:  # a Sequential model's input layer is not in .layers
                out_group[parent.name] = groups.new()
                groups.keep_whole(out_group[parent.name], "the model's input")
            ins.append(out_group[parent.name])
        if isinstance(layer, keras.Model):
            for g in ins:
                groups.keep_whole(g, f"reaches the nested model {layer.name!r}")
            g = groups.new()
            groups.keep_whole(g, f"the output of the nested model {layer.name!r}")
        elif kind in _PRODUCERS and (kind != "Conv2D" or layer.groups == 1):
            in_group[layer.name] = ins[0]
            g = groups.new()
            producers.setdefault(g, []).append(layer.name)
            widths[layer.name] = int(layer.filters if kind == "Conv2D" else layer.units)
        elif kind in _PER_CHANNEL and (kind != "DepthwiseConv2D" or layer.depth_multiplier == 1) and (
            kind != "BatchNormalization" or layer.axis in (-1, len(layer.input.shape) - 1)
        ):
            g = ins[0]
            in_group[layer.name] = g
        elif kind in _ELEMENTWISE and isinstance(layer, keras.layers.Layer):
            g = ins[0]
            for other in ins[1:]:
                g = groups.union(g, other)
        elif not isinstance(layer, keras.layers.Layer) and _channelwise_op(layer):
            g = ins[0]  # an elementwise op (x + 3, x * y): its tensors share the channels
            for other in ins[1:]:
                g = groups.union(g, other)
        else:
            for g in ins:
                groups.keep_whole(g, f"reaches {kind} {layer.name!r}, which cannot be sliced")
            g = groups.new()
            groups.keep_whole(g, f"the output of {kind} {layer.name!r}")
        out_group[layer.name] = g
    for t in model.outputs:
        groups.keep_whole(out_group[t._keras_history.operation.name], "the model's output")
    for name in keep:
        if name in out_group:
            groups.keep_whole(out_group[name], f"kept as asked ({name})")
    # settle the union-find: every map names root groups
    roots = {name: groups.find(g) for name, g in out_group.items()}
    ins_root = {name: groups.find(g) for name, g in in_group.items()}
    merged: dict[int, list[str]] = {}
    for g, names in producers.items():
        merged.setdefault(groups.find(g), []).extend(names)
    plan = ChannelPlan(ratio, roots, ins_root, merged, whole=dict(groups.whole), widths=widths)
    for g, names in merged.items():
        if g in plan.whole:
            continue
        score = _importance(model, names)
        width = len(score)
        r = (ratios or {}).get(names[0], ratio)
        kept = max(multiple, round(width * (1.0 - r) / multiple) * multiple)
        if kept >= width:
            plan.whole.setdefault(g, f"{width} channels: nothing to remove at this ratio")
            continue
        plan.keep[g] = np.sort(np.argsort(-score, kind="stable")[:kept])
    return plan


def _channelwise_op(op: Any) -> bool:
    """A Keras op whose every tensor input has the output's rank and channels (elementwise)."""
    node = op._inbound_nodes[0]
    outs = node.output_tensors
    if len(outs) != 1 or not node.input_tensors:
        return False
    shape = outs[0].shape
    return all(len(t.shape) == len(shape) and t.shape[-1] == shape[-1] for t in node.input_tensors)


def _importance(model: Any, names: list[str]) -> np.ndarray:
    total = None
    for name in names:
        kernel = np.asarray(model.get_layer(name).kernel)
        l1 = np.abs(kernel.reshape(-1, kernel.shape[-1])).sum(axis=0)
        l1 = l1 / max(float(l1.mean()), 1e-12)
        total = l1 if total is None else total + l1
    assert total is not None
    return total


@dataclass
class ChannelPruneResult:
    model: Any  # the slimmed Keras 3 model (not fine-tuned)
    groups: list[dict[str, Any]]  # per group: layers, channels before and after, why
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int


def prune_channels(
    model: Any,
    ratio: float,
    *,
    multiple: int = MULTIPLE,
    keep: tuple[str, ...] = (),
    ratios: dict[str, float] | None = None,
) -> ChannelPruneResult:
    """The model with ``ratio`` of the channels of every prunable group removed (see the module);
    ``ratios`` gives groups their own ratio (by the name of the group's first producer).

    Raises:
      UsageError: a ratio outside [0, 1), or nothing in the model can lose channels.
      ModelError: not a built Keras 3 model, or a layer used twice.
    """
    import keras

    plan = plan_channels(model, ratio, multiple=multiple, keep=keep, ratios=ratios)
    if not plan.keep and ratio > 0:
        raise UsageError(
            "channel pruning: no layer of this model can lose channels ("
            + "; ".join(sorted(set(plan.whole.values())))[:300]
            + ")"
        )

    def width_of(layer: Any) -> Any:
        cfg = layer.get_config()
        g = plan.out_group.get(layer.name)
        kind = type(layer).__name__
        if kind in _PRODUCERS and g in plan.keep:
            cfg["filters" if kind == "Conv2D" else "units"] = len(plan.keep[g])
        return type(layer).from_config(cfg)

    slim = keras.models.clone_model(model, clone_function=width_of)
    for old in model.layers:
        weights = old.get_weights()
        if not weights:
            continue
        new = slim.get_layer(old.name)
        new.set_weights(_slice(type(old).__name__, weights, plan, old.name))
    params = int(model.count_params()), int(slim.count_params())
    return ChannelPruneResult(slim, plan.group_report(), *params, macs(model), macs(slim))


def _slice(kind: str, weights: list[np.ndarray], plan: ChannelPlan, name: str) -> list[np.ndarray]:
    out_keep = plan.keep.get(plan.out_group.get(name, -1))
    in_keep = plan.keep.get(plan.in_group.get(name, -1))
    if kind in _PRODUCERS:
        kernel = weights[0]
        if in_keep is not None:
            kernel = np.take(kernel, in_keep, axis=-2)
        if out_keep is not None:
            kernel = np.take(kernel, out_keep, axis=-1)
        rest = [w if out_keep is None else w[out_keep] for w in weights[1:]]  # bias
        return [kernel, *rest]
    if kind == "DepthwiseConv2D":
        if in_keep is None:
            return weights
        return [np.take(weights[0], in_keep, axis=2), *[w[in_keep] for w in weights[1:]]]
    if in_keep is None:  # a per-channel layer (BatchNorm's four vectors, PReLU's slopes)
        return weights
    return [np.take(w, in_keep, axis=-1) for w in weights]


def fine_tune_keras(
    model: Any, x: np.ndarray, y: np.ndarray, *, epochs: int, output: str, learning_rate: float = 1e-3,
    batch_size: int = 64, show_progress: bool = False,
) -> dict[str, Any]:
    """Train the slimmed Keras 3 model on preprocessed (x, y); its loss and accuracy at the end.

    Adam with the learning rate decayed along a cosine to zero over the run: the slimmed model
    settles at the end instead of ending on a full-size step."""
    import time

    import keras

    from shoplens.internal.progress import progress
    from shoplens_convert.finetune import array_batches

    keras.utils.set_random_seed(0)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=output == "logits")
    steps = epochs * -(-len(x) // batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=loss, metrics=["accuracy"])
    bar = progress(show_progress, "fine-tuning the slimmed model", steps)

    class _Bar(keras.callbacks.Callback):  # type: ignore[misc]
        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            bar.advance()

    t0 = time.perf_counter()
    try:
        with array_batches(keras.utils.PyDataset, x, y, batch_size, 0) as batches:
            hist = model.fit(batches, epochs=epochs, verbose=0, callbacks=[_Bar()])
    finally:
        bar.close()
    h = hist.history
    return {
        "epochs": epochs,
        "images": len(x),
        "seconds": round(time.perf_counter() - t0, 1),
        "final_loss": round(float(h["loss"][-1]), 4),
        "final_accuracy": round(float(h["accuracy"][-1]), 4),
    }


def macs(model: Any) -> int:
    """Multiply-accumulates of one image through the model's convolution and dense layers."""
    total = 0
    for layer in model.layers:
        kind = type(layer).__name__
        if kind in ("Conv2D", "DepthwiseConv2D"):
            out = layer.output.shape
            k = np.prod(layer.kernel.shape[:-1]) if kind == "Conv2D" else np.prod(layer.kernel_size)
            channels = out[-1]
            total += int(out[1]) * int(out[2]) * int(channels) * int(k)
        elif kind == "Dense":
            total += int(np.prod(layer.kernel.shape))
    return total
