"""Quantization-aware training with TFMOT: plain QAT, and prune-preserving QAT (PQAT).

QAT inserts fake-quant ops that model int8 rounding during a short fine-tune; PQAT uses TFMOT's
``Default8BitPrunePreserveQuantizeScheme`` so zeros made by pruning stay zero. Both run on
tf-keras models; the result is converted to full int8 by :mod:`shoplens_convert.quantize`.

Before the fine-tune, every activation range starts at the ranges measured on real inputs
(:func:`calibrate_ranges`; TFMOT would start them at [-6, 6]), and by default the fine-tune learns
the float model's own scores (:func:`teacher_scores`, distillation) rather than the labels, so
the int8 model keeps answering as the model handed over (``targets="labels"`` for the usual QAT).

TFMOT's schemes know a fixed list of layers and refuse a model with any other
(``LayerNormalization``, ``Multiply`` of squeeze-and-excite blocks, ``Rescaling``, a
``BatchNormalization`` that follows no convolution under PQAT, the bridge's own layers). Here
every layer the scheme cannot quantize gets an explicit config instead: its output is fake-
quantized (the int8 model quantizes it there too), or, for layers that pass their input through,
nothing. Which layer got which is returned, so the report says it.

    >>> result = quantization_aware_train(model, x, y, FineTuneOptions(epochs=1),
    ...                                   output="probabilities")  # doctest: +SKIP
    >>> result.fallback                                             # doctest: +SKIP
    {'ln_0': 'output fake-quantized (TFMOT has no config for LayerNormalization)'}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shoplens.errors import ConversionError, UsageError
from shoplens.postprocess import to_probabilities
from shoplens_convert._tf import tf_keras, tfmot
from shoplens_convert.bridge import custom_layers
from shoplens_convert.finetune import (
    FineTuneOptions,
    FineTuneResult,
    fine_tune,
    freeze_batchnorm,
    mean_over_batches,
)
from shoplens_convert.options import FINE_TUNE_TARGETS

__all__ = ["QatResult", "calibrate_ranges", "fallback_configs", "quantization_aware_train",
           "teacher_scores"]

# layers whose output is their input (at inference): no fake-quant needed
_PASS_THROUGH = ("Identity", "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
                 "StochasticDepth", "GaussianNoise", "GaussianDropout", "AlphaDropout")  # fmt: skip
# TFLite requires these to keep their input's scale; a fake-quant of their own output breaks that
_SAME_SCALE = ("AveragePooling1D", "AveragePooling2D", "AveragePooling3D")
# layers TFMOT folds into the convolution before them (its layout transforms), or rewrites
_TRANSFORMED = ("SeparableConv1D", "SeparableConv2D")
_FOLDS_BN = ("Conv2D", "DepthwiseConv2D", "Dense")

_CONFIGS: dict[str, type] = {}


@dataclass
class QatResult:
    model: Any  # tf-keras model with fake-quant wrappers, ready for TFLiteConverter
    training: FineTuneResult
    preserve_sparsity: bool
    targets: str  # "source": distilled from the float model; "labels": trained on the labels
    fallback: dict[str, str] = field(default_factory=dict)  # layer -> the config it got, and why


def fallback_configs() -> dict[str, type]:
    """``OutputQuantizeConfig`` and ``NoOpQuantizeConfig`` (TFMOT ``QuantizeConfig`` classes)."""
    if _CONFIGS:
        return dict(_CONFIGS)
    q = tfmot().quantization.keras

    class OutputQuantizeConfig(q.QuantizeConfig):  # type: ignore[misc, name-defined]
        """Weights stay float; the output gets an 8-bit moving-average fake-quant."""

        def get_weights_and_quantizers(self, layer: Any) -> list[Any]:
            return []

        def get_activations_and_quantizers(self, layer: Any) -> list[Any]:
            return []

        def set_quantize_weights(self, layer: Any, quantize_weights: Any) -> None:
            pass

        def set_quantize_activations(self, layer: Any, quantize_activations: Any) -> None:
            pass

        def get_output_quantizers(self, layer: Any) -> list[Any]:
            return [q.quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False,
                                                        narrow_range=False)]  # fmt: skip

        def get_config(self) -> dict[str, Any]:
            return {}

    class NoOpQuantizeConfig(OutputQuantizeConfig):
        """Nothing is fake-quantized (a layer that passes its input through)."""

        def get_output_quantizers(self, layer: Any) -> list[Any]:
            return []

    _CONFIGS.update(OutputQuantizeConfig=OutputQuantizeConfig, NoOpQuantizeConfig=NoOpQuantizeConfig)
    return dict(_CONFIGS)


def _follows_fold(layer: Any) -> bool:
    """A BatchNormalization right after a layer TFMOT folds it into."""
    try:
        inbound = layer._inbound_nodes[0].inbound_layers
    except (AttributeError, IndexError):
        return False
    inbound = inbound if isinstance(inbound, list) else [inbound]
    return len(inbound) == 1 and type(inbound[0]).__name__ in _FOLDS_BN


def teacher_scores(model: Any, x: np.ndarray, *, output: str, batch_size: int = 256) -> np.ndarray:
    """The float model's class probabilities on ``x``: the targets QAT learns by default.

    Trained on the labels, a short QAT run goes on training the model, and the int8 model answers
    differently from the one handed over, often more accurately on a briefly trained source, never
    more faithfully; the release gate measures faithfulness (agreement with the source). Learning
    the source's own scores (distillation, temperature 1) asks QAT only to undo int8's rounding.
    """
    # batch by batch: predict() on the whole array first copies it into one tensor (58,000 images at
    # 96x96x3: 6.4 GB more beside the fine-tune's own copy)
    scores = np.concatenate([np.asarray(model.predict_on_batch(x[i : i + batch_size]))
                             for i in range(0, len(x), batch_size)])  # fmt: skip
    return to_probabilities(scores, logits=output == "logits").astype(np.float32)


def calibrate_ranges(qat_model: Any, x: np.ndarray, *, images: int = 512, batch_size: int = 64) -> int:
    """Start every moving-average fake-quant range at the mean range of ``images`` real inputs.

    TFMOT starts those ranges at [-6, 6] and moves them 0.1 % a training step (EMA decay 0.999),
    so a short QAT run trains, and converts, with activations clipped to about [-6, 6]: fatal
    where activations are large (ResNet50 on BGR-minus-mean pixels: top-1 agreement with the
    source 0.50 after one epoch). Like :func:`~shoplens_convert.finetune.recalibrate_batchnorm`,
    one forward pass per batch in training mode with decay k/(k+1) at batch k makes each range
    the average of its batch ranges; no weight is trained (BatchNorm is frozen for QAT). The
    decay is fixed inside TFMOT's quantizer, so it is set for these passes only, by wrapping the
    function the quantizer calls. Returns how many batches were seen.
    """
    from tensorflow_model_optimization.python.core.quantization.keras import quant_ops

    original = quant_ops.MovingAvgQuantize
    decay = [0.0]

    def calibrating(*args: Any, **kwargs: Any) -> Any:
        return original(*args, **{**kwargs, "ema_decay": decay[0]})

    def set_decay(d: float) -> None:
        decay[0] = d

    quant_ops.MovingAvgQuantize = calibrating  # module-wide: not for two conversions in one process at once
    try:
        return mean_over_batches(qat_model, x, set_decay, images=images, batch_size=batch_size)
    finally:
        quant_ops.MovingAvgQuantize = original


def _annotate(model: Any, registries: list[Any]) -> tuple[Any, dict[str, str]]:
    """``quantize_annotate_model``, with an explicit config for every layer a registry lacks.

    PQAT's registry calls "supported" every layer without trainable weights, then asks the 8-bit
    registry for its config, which may not have one: both must support a layer.
    """
    tfk = tf_keras()
    q = tfmot().quantization.keras
    cfgs = fallback_configs()
    fallback: dict[str, str] = {}

    def annotate(layer: Any) -> Any:
        kind = type(layer).__name__
        supported = all(r.supports(layer) for r in registries) or kind in _TRANSFORMED
        if kind == "BatchNormalization" and _follows_fold(layer):
            supported = True
        if kind in _SAME_SCALE:
            fallback[layer.name] = f"not fake-quantized (TFLite's {kind} keeps its input's scale)"
            return q.quantize_annotate_layer(layer, quantize_config=cfgs["NoOpQuantizeConfig"]())
        if supported:
            return q.quantize_annotate_layer(layer)
        if kind in _PASS_THROUGH:
            fallback[layer.name] = f"not fake-quantized ({kind} passes its input through)"
            return q.quantize_annotate_layer(layer, quantize_config=cfgs["NoOpQuantizeConfig"]())
        fallback[layer.name] = f"output fake-quantized, weights float (TFMOT has no config for {kind})"
        return q.quantize_annotate_layer(layer, quantize_config=cfgs["OutputQuantizeConfig"]())

    with q.quantize_scope(custom_layers()):
        annotated = tfk.models.clone_model(model, clone_function=annotate)
    annotated.set_weights(model.get_weights())
    return annotated, fallback


def quantization_aware_train(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    options: FineTuneOptions,
    *,
    output: str,
    preserve_sparsity: bool = False,
    targets: str = "source",
    teacher: np.ndarray | None = None,
    show_progress: bool = False,
) -> QatResult:
    """Wrap ``model`` (tf-keras) for QAT (or PQAT) and fine-tune it on preprocessed (x, y).

    Args:
      model: a flat tf-keras functional model (the bridge makes one from any Keras 3 model).
      x, y: preprocessed training images and their class indices.
      options: epochs, batch size and learning rate of the fine-tune.
      output: ``"probabilities"`` or ``"logits"`` (picks the loss).
      preserve_sparsity: PQAT: keep the zeros of a pruned model.
      targets: ``"source"`` (default): learn the float model's own scores on ``x``
        (distillation), so the int8 model keeps answering as the model handed over;
        ``"labels"``: learn ``y``, which also goes on training the model (the usual QAT).
      teacher: with ``"source"``, the scores to learn when they come from another model than
        ``model`` (PQAT: the dense model before pruning, from :func:`teacher_scores`).

    Returns:
      A :class:`QatResult` whose ``fallback`` lists the layers given a fallback config.

    Raises:
      ConversionError: TFMOT still cannot wrap the model (the message is TFMOT's first line).
    """
    if targets not in FINE_TUNE_TARGETS:
        raise UsageError(f"QAT targets must be one of {', '.join(FINE_TUNE_TARGETS)}, got {targets!r}")
    if targets == "labels":
        teach = y
    else:
        teach = teacher if teacher is not None else teacher_scores(model, x, output=output)
    mot = tfmot()
    freeze_batchnorm(model)
    q = mot.quantization.keras
    if preserve_sparsity:
        scheme = mot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
    else:
        scheme = q.default_8bit.Default8BitQuantizeScheme()
    try:
        default = q.default_8bit.Default8BitQuantizeScheme()
        registries = [scheme.get_quantize_registry(), default.get_quantize_registry()]
        annotated, fallback = _annotate(model, registries)
        with q.quantize_scope({**custom_layers(), **fallback_configs()}):
            qat_model = q.quantize_apply(annotated, scheme)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConversionError(f"QAT: TFMOT cannot quantize this model: {first[:300]}") from None
    calibrate_ranges(qat_model, x)
    result = fine_tune(
        qat_model,
        x,
        teach,
        options,
        output=output,
        what="prune-preserving QAT" if preserve_sparsity else "QAT",
        show_progress=show_progress,
    )
    return QatResult(qat_model, result, preserve_sparsity, targets, fallback)
