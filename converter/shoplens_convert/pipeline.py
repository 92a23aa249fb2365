"""``convert``: the pipeline that chains the stages, each one module that hands its result on.

load -> analyse (the model's own input preprocessing; refuse normalizing twice) -> read data
     -> evaluate the source -> prepare (bridge to tf-keras, input preprocessing into the contract,
        fold) -> [prune + fine-tune + strip] -> quantize (post-training, QAT/PQAT, or auto under
        the guard) -> package (ShopLens and standard TFLite metadata) -> report

Nothing is written here; :meth:`ConversionResult.save` writes the outputs atomically (and runs
the Edge TPU compiler and the bundle, so the report is written once, complete). The CLI
(``shoplens convert``) is a thin layer over :func:`convert`.

    >>> result = convert("product_cnn.keras", ConvertOptions(recipe="int8",
    ...                  calib_data="fashion-mnist:train:300"))           # doctest: +SKIP
    >>> result.save("out/int8")                                           # doctest: +SKIP
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shoplens.contract import PreprocessContract
from shoplens.data.datasets import Dataset
from shoplens.data.spec import open_dataset
from shoplens.errors import ConversionError, DataError, ModelError, UsageError
from shoplens.metrics import EvalResult, evaluate_tflite
from shoplens_convert.auto import auto_select
from shoplens_convert.edgetpu_target import make_static
from shoplens_convert.embedding import export_embedding
from shoplens_convert.finetune import FineTuneOptions
from shoplens_convert.flatbuffer import compact_model
from shoplens_convert.frames import preprocessed_arrays
from shoplens_convert.guard import (
    AccuracyComparison,
    check_classes,
    compare,
    evaluate_keras_model,
)
from shoplens_convert.load import (
    LoadedModel,
    check_contract_fits,
    detect_output_kind,
    find_labels,
    find_sidecar_contract,
    load_keras_model,
)
from shoplens_convert.metadata import embed_shoplens_metadata, shoplens_metadata_dict
from shoplens_convert.options import TARGETS, ConvertOptions
from shoplens_convert.prepare import Prepared, SourceGraph, analyse_source, prepare_model
from shoplens_convert.quantize import quantize
from shoplens_convert.recipes import Recipe
from shoplens_convert.report import conversion_report, latency_ms
from shoplens_convert.result import OUTPUT_FILES, ConversionResult, check_output_dir
from shoplens_convert.standard_metadata import ModelDescription, embed_standard_metadata

__all__ = ["OUTPUT_FILES", "TARGETS", "ConversionResult", "ConvertOptions", "check_output_dir", "convert"]


class _Stopwatch:
    def __init__(self) -> None:
        self.start = self._t = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._t, 2)
        self._t = now


@dataclass(frozen=True)
class Source:
    """The loaded source model and everything known about it before any data is read."""

    loaded: LoadedModel
    contract: PreprocessContract
    labels: tuple[str, ...]
    graph: SourceGraph


@dataclass(frozen=True)
class Data:
    """Calibration and training arrays (preprocessed with the source's contract), eval data."""

    calibration: np.ndarray | None
    train: tuple[np.ndarray, np.ndarray] | None
    eval: Dataset | None
    calib_spec: str | None
    report: dict[str, Any]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Quantized:
    model: bytes  # packaged: metadata and (Edge TPU) static shapes
    chosen: str
    comparison: AccuracyComparison | None
    report: dict[str, Any]  # qat, fallback, auto_trials blocks


def load_source(model_path: str | Path, o: ConvertOptions, recipe: Recipe) -> Source:
    """Load the model, its contract and labels; check what can be checked before reading data."""
    loaded = load_keras_model(model_path, unsafe=o.unsafe_load)
    contract = find_sidecar_contract(loaded.path, o.contract)
    check_contract_fits(loaded, contract)
    labels = find_labels(loaded.path, o.labels, loaded.num_classes)
    edits = o.prune is not None or o.channel_pruning or recipe.qat or o.bake_preprocessing or (
        contract.per_channel
    )
    if loaded.format == "tf_saved_model" and edits:  # say so before minutes of data reading
        raise UsageError(
            f"{loaded.path} is a plain TF SavedModel (no Keras graph); pruning, QAT and folding need "
            "a Keras model (.keras, .h5 or a tf-keras SavedModel)"
        )
    graph = analyse_source(loaded, contract, allow_double_normalization=o.allow_double_normalization)
    return Source(loaded, contract, labels, graph)


def read_data(src: Source, o: ConvertOptions, recipe: Recipe) -> Data:
    """Calibration, training and evaluation data, each read once through the SDK preprocessing."""
    show = o.show_progress
    calib_spec = o.calib_data or o.train_data
    calibration = None
    warnings: list[str] = []
    report: dict[str, Any] = {}
    if recipe.needs_calibration or recipe.quantization == "int8":
        if not calib_spec:
            raise UsageError(f"recipe {recipe.name} calibrates int8 ranges; add --calib-data D")
        calib_ds = open_dataset(calib_spec)  # calibration reads images only: folder names are free
        calibration, _ = preprocessed_arrays(calib_ds, src.contract, o.calib_count, what="calibration data",
                                             show_progress=show)  # fmt: skip
        report["calibration"] = {"data": calib_spec, "asked": o.calib_count, "used": len(calibration)}
        if len(calibration) < o.calib_count:
            warnings.append(
                f"calibrated on {len(calibration)} images of {calib_spec}, not the {o.calib_count} asked "
                "(the data holds no more readable images); int8 ranges may be less accurate"
            )
    train = None
    if o.train_data and (o.prune is not None or o.channel_pruning or recipe.qat):
        train_ds = open_dataset(o.train_data, labels=src.labels, every_class=True)
        train = preprocessed_arrays(train_ds, src.contract, None, what="training data", show_progress=show)
        if train[1].size and int(train[1].max()) >= len(src.labels):
            raise DataError(
                f"{o.train_data} has label {int(train[1].max())} but the model predicts "
                f"{len(src.labels)} classes"
            )
        report["training"] = {"data": o.train_data, "images": len(train[0])}
    eval_ds = open_dataset(o.eval_data, labels=src.labels) if o.eval_data else None
    if eval_ds is not None:
        check_classes(eval_ds, len(src.labels))
    return Data(calibration, train, eval_ds, calib_spec, report, tuple(warnings))


def _probe(data: Data, contract: PreprocessContract) -> np.ndarray:
    if data.calibration is not None:
        return data.calibration[:16]
    if data.train is not None:
        return data.train[0][:16]
    lo, hi = contract.value_range or (0.0, 1.0)
    return np.random.default_rng(0).uniform(lo, hi, (4, contract.height, contract.width,
                                                     contract.channels)).astype(np.float32)  # fmt: skip


def channel_stage(
    src: Source, data: Data, o: ConvertOptions, output_kind: str
) -> tuple[Source, dict[str, Any]]:
    """Remove a share of the channels (structured pruning) and fine-tune the slimmed Keras model."""
    import dataclasses

    import keras

    from shoplens_convert.channels import fine_tune_keras, prune_channels
    from shoplens_convert.embedding import find_embedding_layer

    model = src.loaded.model
    if not isinstance(model, keras.Model):
        raise ModelError(
            f"--prune-channels needs a Keras 3 model (.keras); {src.loaded.path} is {src.loaded.format}"
        )
    if data.train is None:  # pragma: no cover - the options require --train-data
        raise UsageError("--prune-channels needs --train-data to fine-tune on")
    keep = (find_embedding_layer(model, o.embedding),) if o.embedding else ()  # its dimension stays
    x, y = data.train
    budget = None
    if o.latency_budget is not None:
        from shoplens_convert.channel_budget import budget_ratios

        probe = data.calibration if data.calibration is not None else x
        budget = budget_ratios(model, probe[:256], float(o.latency_budget), keep=keep)
        res = prune_channels(model, 0.0, keep=keep, ratios=budget.ratios)
    else:
        res = prune_channels(model, float(o.prune_channels or 0), keep=keep)
    lr = o.learning_rate or 1e-3
    trained = fine_tune_keras(res.model, x, y, epochs=o.prune_epochs, output=output_kind, learning_rate=lr,
                              show_progress=o.show_progress)  # fmt: skip
    how = "the same ratio in every prunable group"
    if budget is not None:
        how = (
            "per-group ratios (25/50/75 %) by sensitivity (KL from the dense scores) per MAC saved, "
            f"to {budget.budget:g} x the dense MACs"
        )
    block = {
        "ratio": float(o.prune_channels or 0) if budget is None else None,
        "criterion": f"filter L1 norm, multiples of 4 channels; {how}",
        "budget": budget.to_dict() if budget is not None else None,
        "params_before": res.params_before,
        "params_after": res.params_after,
        "macs_before": res.macs_before,
        "macs_after": res.macs_after,
        "groups": res.groups,
        "fine_tune": trained,
    }
    loaded = dataclasses.replace(src.loaded, model=res.model)
    # the graph the bridge rebuilds must be the slimmed one, not the source's
    graph = analyse_source(loaded, src.contract, allow_double_normalization=o.allow_double_normalization)
    return dataclasses.replace(src, loaded=loaded, graph=graph), block


def prune_stage(
    work: Prepared, o: ConvertOptions, output_kind: str, teacher: np.ndarray | None = None
) -> tuple[Prepared, dict[str, Any]]:
    """Magnitude pruning with TFMOT, fine-tuned on the training data; returns the pruned work model.

    With ``--prune-targets source`` the fine-tune learns ``teacher``, the dense model's scores on
    the training images (distillation), instead of their labels.
    """
    from shoplens_convert.prune import PruneOptions, prune_model

    if work.train is None:
        raise UsageError("--prune needs --train-data to fine-tune on")
    ft = FineTuneOptions(epochs=o.prune_epochs, learning_rate=o.learning_rate or 2e-4)
    popts = PruneOptions(float(o.prune or 0), ft, freeze_batchnorm=o.prune_freeze_batchnorm)
    y = teacher if o.prune_targets == "source" and teacher is not None else work.train[1]
    pr = prune_model(work.model, work.train[0], y, popts, output=output_kind, show_progress=o.show_progress)
    block = {
        "target_sparsity": float(o.prune or 0),
        "targets": "source" if y is teacher else "labels",
        "prunable_weight_share": pr.prunable_share,
        "layer_sparsity": pr.sparsity,
        "left_dense": pr.left_dense,
        "fine_tune": vars(pr.training),
        "batchnorm_recalibrated": pr.batchnorm_recalibrated,
    }
    return Prepared(pr.model, work.contract, work.calibration, work.train, work.report), block


def quantize_stage(
    work: Prepared,
    recipe: Recipe,
    o: ConvertOptions,
    *,
    package: Any,
    source_eval: EvalResult | None,
    eval_ds: Dataset | None,
    output_kind: str,
    teacher: np.ndarray | None = None,
) -> Quantized:
    """Quantize the work model with the recipe (auto: the first candidate the guard accepts).

    ``teacher``: the scores QAT learns, when they come from a model before this one (the dense
    model before pruning); by default QAT learns the work model's own.
    """
    static = o.target == "edgetpu"
    trials: list[dict[str, Any]] = []
    parts: dict[str, Any] = {}

    def judge(candidate: str, raw: bytes) -> tuple[bytes, AccuracyComparison | None]:
        packed = package(raw)
        if eval_ds is None or source_eval is None:
            return packed, None
        conv_eval = evaluate_tflite(packed, eval_ds, name=candidate, show_progress=o.show_progress)
        cmp_ = compare(source_eval, conv_eval, o.max_drop, o.min_agreement)
        trials.append({"candidate": candidate, "bytes": len(packed), **cmp_.to_dict()})
        return packed, cmp_

    if recipe.quantization == "auto":
        if eval_ds is None or (o.max_drop is None and o.min_agreement is None):
            raise UsageError(
                "--recipe auto picks the smallest model that meets --max-drop (and --min-agreement); "
                "add --eval-data and --max-drop"
            )
        fallback: dict[str, Any] = {}
        model_bytes, chosen, comparison = auto_select(
            work.model, work.calibration, recipe, judge, target=o.target, io_type=o.io_type,
            per_tensor=o.per_tensor, ranges=o.ranges, show_progress=o.show_progress, fallback=fallback,
        )  # fmt: skip
        if fallback:
            parts["fallback"] = fallback
        parts["auto_trials"] = trials
        return Quantized(model_bytes, chosen, comparison, parts)
    model = work.model
    if recipe.qat:
        from shoplens_convert.qat import quantization_aware_train

        if work.train is None:
            raise UsageError(f"recipe {recipe.name} fine-tunes; add --train-data D")
        ft = recipe.fine_tune or FineTuneOptions(epochs=1, learning_rate=5e-5)
        ft = FineTuneOptions(epochs=o.qat_epochs or ft.epochs, batch_size=ft.batch_size,
                             learning_rate=o.learning_rate or ft.learning_rate)  # fmt: skip
        qr = quantization_aware_train(
            model, work.train[0], work.train[1], ft, output=output_kind,
            preserve_sparsity=recipe.preserve_sparsity, targets=o.qat_targets, teacher=teacher,
            show_progress=o.show_progress,
        )  # fmt: skip
        learnt = None if qr.targets == "labels" else "source" if teacher is None else "source before pruning"
        parts["qat"] = {"preserve_sparsity": qr.preserve_sparsity, "targets": qr.targets, "teacher": learnt,
                        "fine_tune": vars(qr.training), "fallback_configs": qr.fallback}  # fmt: skip
        model = qr.model
    ranges = o.activation_ranges(recipe) or "minmax"  # a QAT model carries the ranges it learnt
    raw = quantize(model, recipe.quantization, calibration=work.calibration, io_type=o.io_type,
                   per_tensor=o.per_tensor, static_batch=static, ranges=ranges,
                   show_progress=o.show_progress)  # fmt: skip
    model_bytes, comparison = judge(recipe.name, raw)
    return Quantized(model_bytes, recipe.name, comparison, parts)


def convert(model_path: str | Path, options: ConvertOptions) -> ConversionResult:
    """Convert a Keras classifier (see the module docstring for the stages).

    Args:
      model_path: a ``.keras``, ``.h5`` or SavedModel directory, with ``contract.json`` and
        ``labels.txt`` beside it (or given in ``options``).
      options: a :class:`ConvertOptions`.

    Returns:
      A :class:`ConversionResult`; ``.accepted`` is False (and ``.model`` None) when the accuracy
      guard rejected the model.

    Raises:
      UsageError, DataError, ModelError: bad options, data or model (exit 2 in the CLI).
      ConversionError: a stage failed (exit 1).
    """
    o = options
    clock = _Stopwatch()
    recipe = o.resolved_recipe()
    src = load_source(model_path, o, recipe)
    data = read_data(src, o, recipe)
    clock.lap("read_data")
    probe = _probe(data, src.contract)
    output_kind, output_why = detect_output_kind(src.loaded.model, probe)
    source_eval = None
    if data.eval is not None:
        source_eval = evaluate_keras_model(
            src.loaded.model, data.eval, src.contract, src.labels, name=src.loaded.path.name,
            show_progress=o.show_progress,
        )  # fmt: skip
        clock.lap("evaluate_source")
    dense_model = src.loaded.model
    channel_block = None
    if o.channel_pruning:
        src, channel_block = channel_stage(src, data, o, output_kind)
        clock.lap("prune_channels")
    work = prepare_model(
        src.loaded, src.graph, src.contract, needs_bridge=o.prune is not None or recipe.qat,
        bake=o.bake_preprocessing, swap_bgr=o.bake_bgr, calibration=data.calibration, train=data.train,
        probe=probe,
    )  # fmt: skip
    clock.lap("bridge")
    parts: dict[str, Any] = {**data.report, **work.report}
    if channel_block is not None:
        parts["prune_channels"] = channel_block
    teacher = None
    if o.prune is not None:
        learns_source = o.prune_targets == "source" or (recipe.qat and o.qat_targets == "source")
        if learns_source and work.train is not None:
            from shoplens_convert.qat import teacher_scores

            # pruning and PQAT learn the model handed over, not the pruned one (which keeps pruning's loss)
            teacher = teacher_scores(work.model, work.train[0], output=output_kind)
        work, parts["prune"] = prune_stage(work, o, output_kind, teacher)
        clock.lap("prune")
    meta = shoplens_metadata_dict(work.contract, src.labels, output=output_kind)
    desc = ModelDescription(
        name=o.name or src.loaded.path.stem,
        description=o.description
        or f"ShopLens product classifier ({len(src.labels)} classes), recipe {recipe.name}.",
        version=o.version,
        author=o.author,
    )

    def package(raw: bytes) -> bytes:
        if o.target == "edgetpu":
            raw = make_static(raw)  # the Edge TPU needs static shapes: batch 1
        with_meta = embed_shoplens_metadata(compact_model(raw), meta)
        return embed_standard_metadata(with_meta, description=desc, contract=work.contract,
                                       labels=src.labels, output=output_kind)  # fmt: skip

    q = quantize_stage(work, recipe, o, package=package, source_eval=source_eval, eval_ds=data.eval,
                       output_kind=output_kind, teacher=teacher)  # fmt: skip
    clock.lap("quantize_and_evaluate")
    parts.update(q.report)
    # sizes compare with the unpruned source, packed the same way as every output
    float_ref = compact_model(quantize(dense_model, "float32"))
    if channel_block is not None and q.model is not None and data.calibration is not None:
        # the dense model through the same int8 conversion: what the channels removed saved
        dense = package(quantize(dense_model, "int8", calibration=data.calibration, io_type=o.io_type,
                                 per_tensor=o.per_tensor, static_batch=o.target == "edgetpu"))  # fmt: skip
        channel_block["int8_bytes_before"], channel_block["int8_bytes_after"] = len(dense), len(q.model)
        if o.latency_runs:
            before = latency_ms(dense, o.latency_runs, data.eval)
            after = latency_ms(q.model, o.latency_runs, data.eval)
            channel_block["invoke_ms_before"] = before.get("invoke_p50")
            channel_block["invoke_ms_after"] = after.get("invoke_p50")
            channel_block["frame_ms_before"] = before.get("end_to_end_p50")
            channel_block["frame_ms_after"] = after.get("end_to_end_p50")
        clock.lap("dense_reference")
    report = conversion_report(
        src.loaded, recipe, o, q.chosen, q.model, float_ref, q.comparison, output_kind, output_why,
        src.labels, src.contract, work.contract, parts, list(data.warnings),
        latency_data=data.eval,
    )  # fmt: skip
    if not report["status"]["accepted"]:
        report["timings_s"] = {**clock.laps, "total": round(time.perf_counter() - clock.start, 2)}
        return ConversionResult(None, src.labels, report, target=o.target)
    extra: dict[str, bytes] = {}
    if o.embedding:
        drift_data = data.eval if data.eval is not None else (
            open_dataset(data.calib_spec) if data.calib_spec else None)  # fmt: skip
        extra["embedding.tflite"], report["embedding"] = export_embedding(
            work.model, o.embedding, q.chosen, work.calibration, work.contract, src.labels, drift_data,
            io_type=o.io_type, per_tensor=o.per_tensor, static_batch=o.target == "edgetpu",
        )  # fmt: skip
        clock.lap("embedding")
    report["timings_s"] = {**clock.laps, "total": round(time.perf_counter() - clock.start, 2)}
    if q.model is None:  # pragma: no cover - accepted implies a model
        raise ConversionError("internal: an accepted conversion without a model")
    return ConversionResult(q.model, src.labels, report, extra, target=o.target)
