"""``convert``: the pipeline that chains the stages, and the options and result it works with.

load -> [fold normalization] -> [bridge to tf-keras] -> [prune + fine-tune + strip]
     -> quantize (recipe; QAT/PQAT fine-tune; auto tries candidates under the guard)
     -> metadata (ShopLens contract + standard TFLite metadata with labels) -> report

Nothing is written here; :meth:`ConversionResult.save` writes the outputs atomically. The CLI
(``shoplens convert``) is a thin layer over :func:`convert`.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shoplens._version import __version__
from shoplens.data.spec import open_dataset
from shoplens.errors import ConversionError, DataError, UsageError
from shoplens.metrics import EvalResult
from shoplens_convert.auto import auto_select
from shoplens_convert.bridge import bridge_to_tf_keras
from shoplens_convert.edgetpu_target import make_static, preflight_block
from shoplens_convert.finetune import FineTuneOptions
from shoplens_convert.flatbuffer import compact_model
from shoplens_convert.fold import plan_fold, reexpress_inputs
from shoplens_convert.frames import preprocessed_arrays
from shoplens_convert.guard import (
    AccuracyComparison,
    check_classes,
    compare,
    evaluate_keras_model,
    evaluate_tflite,
)
from shoplens_convert.load import (
    check_contract_fits,
    detect_output_kind,
    find_labels,
    find_sidecar_contract,
    load_keras_model,
)
from shoplens_convert.metadata import embed_shoplens_metadata, shoplens_metadata_dict
from shoplens_convert.quantize import quantize
from shoplens_convert.recipes import Recipe, load_recipe
from shoplens_convert.report import latency_ms, size_block
from shoplens_convert.result import OUTPUT_FILES, ConversionResult, check_output_dir
from shoplens_convert.standard_metadata import ModelDescription, embed_standard_metadata
from shoplens_convert.tflite_stats import io_summary, weight_sparsity

__all__ = ["OUTPUT_FILES", "ConversionResult", "ConvertOptions", "check_output_dir", "convert"]

TARGETS = ("cpu", "edgetpu")


@dataclass(frozen=True)
class ConvertOptions:
    """Everything ``shoplens convert`` takes, validated when built (paths are checked at use)."""

    recipe: str = "int8"
    labels: Path | None = None
    contract: Path | None = None
    prune: float | None = None
    train_data: str | None = None
    prune_epochs: int = 2
    prune_freeze_batchnorm: bool = False
    qat_epochs: int | None = None  # None: the recipe's own
    learning_rate: float | None = None
    calib_data: str | None = None
    calib_count: int = 300
    eval_data: str | None = None
    max_drop: float | None = None
    target: str = "cpu"
    io_type: str = "uint8"
    per_tensor: bool = False
    bake_preprocessing: bool = False
    bake_bgr: bool = False
    unsafe_load: bool = False
    name: str | None = None
    version: str = "1"
    description: str | None = None
    author: str = "ShopLens"
    latency_runs: int = 200
    embedding: str | None = None  # also export embedding.tflite from this layer ("auto": penultimate)
    show_progress: bool = False

    def __post_init__(self) -> None:
        if self.prune is not None and not 0.0 < float(self.prune) < 1.0:
            raise UsageError(f"--prune sparsity must be strictly between 0 and 1, got {self.prune}")
        if self.prune is not None and not self.train_data:
            raise UsageError("--prune needs --train-data to fine-tune on")
        if self.max_drop is not None and not (np.isfinite(self.max_drop) and self.max_drop >= 0):
            raise UsageError(f"--max-drop must be >= 0 points, got {self.max_drop}")
        if self.max_drop is not None and not self.eval_data:
            raise UsageError("--max-drop needs --eval-data to measure the drop on")
        if self.target not in TARGETS:
            raise UsageError(f"--target must be one of {', '.join(TARGETS)}, got {self.target!r}")
        if self.io_type not in ("uint8", "int8"):
            raise UsageError(f"--io-type must be uint8 or int8, got {self.io_type!r}")
        if not 1 <= self.calib_count <= 100_000:
            raise UsageError(f"--calib-count must be in 1..100000, got {self.calib_count}")
        if not 1 <= self.prune_epochs <= 1000:
            raise UsageError(f"--prune-epochs must be in 1..1000, got {self.prune_epochs}")
        if self.qat_epochs is not None and not 1 <= self.qat_epochs <= 1000:
            raise UsageError(f"--qat-epochs must be in 1..1000, got {self.qat_epochs}")
        if self.target == "edgetpu" and self.io_type != "uint8":
            raise UsageError("--target edgetpu uses uint8 input and output; drop --io-type int8")
        if self.bake_bgr and not self.bake_preprocessing:
            raise UsageError("--bake-bgr needs --bake-preprocessing")
        if self.latency_runs < 0:
            raise UsageError("latency runs must be >= 0")

    def resolved_recipe(self) -> Recipe:
        recipe = load_recipe(self.recipe)
        if recipe.requires_prune and self.prune is None:
            raise UsageError(f"recipe {recipe.name} preserves sparsity from pruning; add --prune S")
        if recipe.qat and not self.train_data:
            raise UsageError(f"recipe {recipe.name} fine-tunes; add --train-data D")
        if self.target == "edgetpu" and recipe.quantization not in ("int8", "auto"):
            raise UsageError(
                f"--target edgetpu needs a full-integer recipe (int8, qat-int8, pqat-int8 or auto), "
                f"not {recipe.name}"
            )
        return recipe


def _tool_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"shoplens": __version__, "python": platform.python_version()}
    for dist in ("tensorflow", "tf-keras", "keras", "tensorflow-model-optimization", "ai-edge-litert"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def convert(model_path: str | Path, options: ConvertOptions) -> ConversionResult:
    """Convert a Keras classifier; see the module docstring for the stages."""
    t_start = time.perf_counter()
    recipe = options.resolved_recipe()
    o = options
    loaded = load_keras_model(model_path, unsafe=o.unsafe_load)
    contract = find_sidecar_contract(loaded.path, o.contract)
    check_contract_fits(loaded, contract)
    _, h, w, c = loaded.input_shape
    labels = find_labels(loaded.path, o.labels, loaded.num_classes)
    edits = o.prune is not None or recipe.qat or o.bake_preprocessing or contract.per_channel
    if loaded.format == "tf_saved_model" and edits:  # say so before minutes of data reading
        raise UsageError(
            f"{loaded.path} is a plain TF SavedModel (no Keras graph); pruning, QAT and folding need "
            "a Keras model (.keras, .h5 or a tf-keras SavedModel)"
        )
    parts: dict[str, Any] = {}  # report sections filled by the stages
    timings: dict[str, float] = {}

    def timed(name: str, t0: float) -> None:
        timings[name] = round(time.perf_counter() - t0, 2)

    show = o.show_progress

    # data, read once each and always through the SDK preprocessing
    t0 = time.perf_counter()
    calib_spec = o.calib_data or o.train_data
    calibration = None
    needs_cal = recipe.needs_calibration or recipe.quantization == "int8"
    if needs_cal:
        if not calib_spec:
            raise UsageError(f"recipe {recipe.name} calibrates int8 ranges; add --calib-data D")
        calibration, _ = preprocessed_arrays(open_dataset(calib_spec), contract, o.calib_count,
                                             what="calibration data", show_progress=show)  # fmt: skip
    train = None
    if o.train_data and (o.prune is not None or recipe.qat):
        train = preprocessed_arrays(open_dataset(o.train_data), contract, None, what="training data",
                                    show_progress=show)  # fmt: skip
        _check_labels(train[1], len(labels), o.train_data)
    eval_ds = open_dataset(o.eval_data) if o.eval_data else None
    if eval_ds is not None:
        check_classes(eval_ds, len(labels))
    timed("read_data", t0)

    probe = calibration[:16] if calibration is not None else (train[0][:16] if train else None)
    if probe is None:
        probe = (
            np.random.default_rng(0)
            .uniform(*(contract.value_range or (0.0, 1.0)), (4, h, w, c))
            .astype(np.float32)
        )
    output_kind, output_why = detect_output_kind(loaded.model, probe)

    source_eval: EvalResult | None = None
    if eval_ds is not None:
        t0 = time.perf_counter()
        source_eval = evaluate_keras_model(loaded.model, eval_ds, contract, labels, name=loaded.path.name,
                                           show_progress=show)  # fmt: skip
        timed("evaluate_source", t0)

    # fold normalization (per-channel contracts always; --bake-preprocessing on request)
    fold = plan_fold(contract, bake=o.bake_preprocessing, swap_bgr=o.bake_bgr)
    work_model = loaded.model
    work_contract = contract
    bridged = False
    needs_bridge = fold is not None or o.prune is not None or recipe.qat
    if needs_bridge:
        t0 = time.perf_counter()
        if loaded.format == "saved_model":  # already tf-keras
            if fold is not None:
                raise UsageError(
                    "folding normalization into a tf-keras SavedModel is not supported; use .keras"
                )
        else:
            work_model = bridge_to_tf_keras(loaded.model, input_transform=fold.apply if fold else None).model
            bridged = True
        if fold is not None:
            work_contract = fold.contract
            x = probe[:4]
            folded_in = reexpress_inputs(x, contract, fold.contract)
            diff = float(np.max(np.abs(np.asarray(loaded.model(x, training=False))
                                       - np.asarray(work_model(folded_in, training=False)))))  # fmt: skip
            if diff > 1e-3:
                raise ConversionError(f"folding the normalization changed the outputs by {diff:.2g}")
            parts["fold"] = {"reason": fold.reason, "max_output_difference": diff}
            if calibration is not None:
                calibration = reexpress_inputs(calibration, contract, fold.contract)
            if train is not None:
                train = (reexpress_inputs(train[0], contract, fold.contract), train[1])
        timed("bridge", t0)
    parts["bridge"] = {"used": bridged}

    # prune
    if o.prune is not None:
        from shoplens_convert.prune import PruneOptions, prune_model

        if train is None:
            raise UsageError("--prune needs --train-data to fine-tune on")
        t0 = time.perf_counter()
        ft = FineTuneOptions(epochs=o.prune_epochs, learning_rate=o.learning_rate or 2e-4)
        popts = PruneOptions(float(o.prune), ft, freeze_batchnorm=o.prune_freeze_batchnorm)
        pr = prune_model(work_model, train[0], train[1], popts, output=output_kind,
                         show_progress=show)  # fmt: skip
        work_model = pr.model
        parts["prune"] = {
            "target_sparsity": float(o.prune),
            "layer_sparsity": pr.sparsity,
            "left_dense": pr.left_dense,
            "fine_tune": vars(pr.training),
        }
        timed("prune", t0)

    # quantize
    t0 = time.perf_counter()
    # sizes compare with the unpruned source, packed the same way as every output
    float_ref = compact_model(quantize(loaded.model, "float32"))
    trials: list[dict[str, Any]] = []
    chosen: str
    model_bytes: bytes | None
    comparison: AccuracyComparison | None = None
    meta = shoplens_metadata_dict(work_contract, labels, output=output_kind)
    desc = ModelDescription(
        name=o.name or loaded.path.stem,
        description=o.description
        or f"ShopLens product classifier ({len(labels)} classes), recipe {recipe.name}.",
        version=o.version,
        author=o.author,
    )

    def finish(raw: bytes) -> bytes:
        if o.target == "edgetpu":
            raw = make_static(raw)  # the Edge TPU needs static shapes: batch 1
        with_meta = embed_shoplens_metadata(compact_model(raw), meta)
        return embed_standard_metadata(with_meta, description=desc, contract=work_contract, labels=labels,
                                       output=output_kind)  # fmt: skip

    def judge(candidate: str, raw: bytes) -> tuple[bytes, AccuracyComparison | None]:
        packed = finish(raw)
        if eval_ds is None or source_eval is None:
            return packed, None
        conv_eval = evaluate_tflite(packed, eval_ds, name=f"{candidate}", show_progress=show)
        cmp_ = compare(source_eval, conv_eval, o.max_drop)
        trials.append({"candidate": candidate, "bytes": len(packed), **cmp_.to_dict()})
        return packed, cmp_

    if recipe.quantization == "auto":
        if eval_ds is None or o.max_drop is None:
            raise UsageError(
                "--recipe auto picks the smallest model that meets --max-drop; add --eval-data and --max-drop"
            )
        fallback: dict[str, Any] = {}
        model_bytes, chosen, comparison = auto_select(
            work_model, calibration, recipe, judge, target=o.target, io_type=o.io_type,
            per_tensor=o.per_tensor, show_progress=show, fallback=fallback,
        )  # fmt: skip
        if fallback:
            parts["fallback"] = fallback
    elif recipe.qat:
        from shoplens_convert.qat import quantization_aware_train

        if train is None:
            raise UsageError(f"recipe {recipe.name} fine-tunes; add --train-data D")
        ft = recipe.fine_tune or FineTuneOptions(epochs=1, learning_rate=5e-5)
        ft = FineTuneOptions(epochs=o.qat_epochs or ft.epochs, batch_size=ft.batch_size,
                             learning_rate=o.learning_rate or ft.learning_rate)  # fmt: skip
        qr = quantization_aware_train(
            work_model, train[0], train[1], ft, output=output_kind,
            preserve_sparsity=recipe.preserve_sparsity, show_progress=show,
        )  # fmt: skip
        parts["qat"] = {"preserve_sparsity": qr.preserve_sparsity, "fine_tune": vars(qr.training)}
        raw = quantize(qr.model, "int8", calibration=calibration, io_type=o.io_type, per_tensor=o.per_tensor,
                       show_progress=show)  # fmt: skip
        model_bytes, comparison = judge(recipe.name, raw)
        chosen = recipe.name
    else:
        raw = quantize(work_model, recipe.quantization, calibration=calibration, io_type=o.io_type,
                       per_tensor=o.per_tensor, show_progress=show)  # fmt: skip
        model_bytes, comparison = judge(recipe.name, raw)
        chosen = recipe.name
    timed("quantize_and_evaluate", t0)

    # report
    status_ok = comparison is None or comparison.passed
    report: dict[str, Any] = {
        "status": {},
        "source": {
            "path": str(loaded.path),
            "format": loaded.format,
            "sha256": loaded.sha256,
            "input_shape": list(loaded.input_shape),
            "classes": loaded.num_classes,
            "output": output_kind,
            "output_detected_by": output_why,
        },
        "recipe": {
            **recipe.to_dict(),
            "chosen": chosen,
            "io_type": o.io_type,
            "per_channel": not o.per_tensor,
            "target": o.target,
        },
        "labels": {
            "source": str(o.labels) if o.labels else "beside the model or the model's classes",
            "names": list(labels),
        },
        "contract": {"source": contract.to_dict(), "model": work_contract.to_dict()},
        **parts,
        "sizes": size_block(float_ref, model_bytes),
        "tflite": {**io_summary(model_bytes), "weight_sparsity": weight_sparsity(model_bytes)},
        "accuracy": comparison.to_dict() if comparison else None,
        "auto_trials": trials if recipe.quantization == "auto" else None,
        "latency": latency_ms(model_bytes, o.latency_runs, eval_ds) if o.latency_runs else None,
        "tools": _tool_versions(),
        "timings_s": {**timings, "total": round(time.perf_counter() - t_start, 2)},
    }
    if o.target == "edgetpu":
        report["edgetpu"] = {"preflight": preflight_block(model_bytes)}
    if o.prune is not None:
        ws = report["tflite"]["weight_sparsity"]
        pruned = [v for k, v in ws.items() if v["op"] != "DEPTHWISE_CONV_2D"]
        total = sum(v["weights"] for v in pruned)
        report["prune"]["sparsity_after_conversion"] = (
            round(sum(v["sparsity"] * v["weights"] for v in pruned) / total, 4) if total else 0.0
        )
    if status_ok:
        msg = f"converted with recipe {chosen}"
        if comparison is not None:
            lo, hi = comparison.ci95
            msg += f": top-1 drop {comparison.drop:+.2f} pt (95 % CI {lo:+.2f}..{hi:+.2f})"
            if o.max_drop is not None:
                msg += f" within the {o.max_drop:g} pt budget"
        report["status"] = {"accepted": True, "message": msg}
        extra: dict[str, bytes] = {}
        if o.embedding:
            t0 = time.perf_counter()
            extra["embedding.tflite"], report["embedding"] = _export_embedding(
                work_model, o, chosen, calibration, work_contract, labels,
                eval_ds if eval_ds is not None else open_dataset(calib_spec) if calib_spec else None,
            )  # fmt: skip
            report["timings_s"]["embedding"] = round(time.perf_counter() - t0, 2)
        return ConversionResult(model_bytes, labels, report, extra)
    if comparison is None:  # pragma: no cover - status_ok is True without a comparison
        raise ConversionError("internal: a rejected conversion without an accuracy comparison")
    msg = (
        f"top-1 drop {comparison.drop:.2f} pt (95 % CI {comparison.ci95[0]:+.2f}..{comparison.ci95[1]:+.2f}) "
        f"exceeds --max-drop {o.max_drop:g} pt with recipe {chosen}; no model written (see report.md)"
    )
    report["status"] = {"accepted": False, "message": msg}
    return ConversionResult(None, labels, report)


def _check_labels(y: np.ndarray, k: int, spec: str) -> None:
    if y.size and int(y.max()) >= k:
        raise DataError(f"{spec} has label {int(y.max())} but the model predicts {k} classes")


def _export_embedding(
    work_model: Any,
    o: ConvertOptions,
    chosen: str,
    calibration: np.ndarray | None,
    contract: Any,
    labels: tuple[str, ...],
    drift_data: Any,
) -> tuple[bytes, dict[str, Any]]:
    """embedding.tflite with the chosen recipe's quantization, and its drift block for the report."""
    from shoplens_convert.edgetpu_target import make_static
    from shoplens_convert.embedding import build_embedding_model, embedding_drift

    emb_model, layer = build_embedding_model(work_model, o.embedding or "auto")
    mode = chosen if chosen in ("float32", "float16", "dynamic") else "int8"
    raw = quantize(emb_model, mode, calibration=calibration if mode == "int8" else None, io_type=o.io_type,
                   per_tensor=o.per_tensor)  # fmt: skip
    if o.target == "edgetpu":
        raw = make_static(raw)
    meta = shoplens_metadata_dict(contract, labels, output="embedding", embedding_layer=layer)
    emb_bytes = embed_shoplens_metadata(compact_model(raw), meta)
    block: dict[str, Any] = {"file": "embedding.tflite", "layer": layer, "quantization": mode,
                             "bytes": len(emb_bytes)}  # fmt: skip
    if chosen in ("qat-int8", "pqat-int8"):
        block["note"] = "post-training int8 of the pre-QAT backbone (the QAT graph is not split)"
    if drift_data is not None:
        block["drift"] = embedding_drift(emb_model, emb_bytes, drift_data, contract)
        block["drift"]["data"] = drift_data.name
    return emb_bytes, block
