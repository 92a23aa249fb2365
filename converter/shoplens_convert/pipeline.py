"""``convert``: the pipeline that chains the stages, and the options and result it works with.

load -> [fold normalization] -> [bridge to tf-keras] -> [prune + fine-tune + strip]
     -> quantize (recipe; QAT/PQAT fine-tune; auto tries candidates under the guard)
     -> metadata (ShopLens contract + standard TFLite metadata with labels) -> report

Nothing is written here; :meth:`ConversionResult.save` writes the outputs atomically. The CLI
(``shoplens convert``) is a thin layer over :func:`convert`.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shoplens._atomic import atomic_write_bytes, atomic_write_text, ensure_output_dir
from shoplens._version import __version__
from shoplens.contract import PreprocessContract
from shoplens.data.spec import open_dataset
from shoplens.errors import ConversionError, DataError, DriftGateFailed, OutputExistsError, UsageError
from shoplens.metrics import EvalResult
from shoplens_convert.bridge import bridge_to_tf_keras
from shoplens_convert.finetune import FineTuneOptions
from shoplens_convert.flatbuffer import compact_model
from shoplens_convert.fold import plan_fold
from shoplens_convert.frames import preprocessed_arrays
from shoplens_convert.guard import AccuracyComparison, compare, evaluate_keras_model, evaluate_tflite
from shoplens_convert.load import LoadedModel, find_labels, find_sidecar_contract, load_keras_model
from shoplens_convert.metadata import embed_shoplens_metadata, shoplens_metadata_dict
from shoplens_convert.quantize import quantize
from shoplens_convert.recipes import Recipe, load_recipe
from shoplens_convert.report import latency_ms, render_markdown, size_block
from shoplens_convert.standard_metadata import ModelDescription, embed_standard_metadata
from shoplens_convert.tflite_stats import io_summary, weight_sparsity

__all__ = ["OUTPUT_FILES", "ConversionResult", "ConvertOptions", "check_output_dir", "convert"]

OUTPUT_FILES = ("model.tflite", "labels.txt", "report.json", "report.md")
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


@dataclass
class ConversionResult:
    """The converted model (absent when the guard rejected it), its labels and the report."""

    model: bytes | None
    labels: tuple[str, ...]
    report: dict[str, Any]

    @property
    def accepted(self) -> bool:
        return self.model is not None

    def save(self, out_dir: str | Path, *, overwrite: bool = False) -> dict[str, Path]:
        """Write model.tflite, labels.txt, report.json and report.md (atomically, each).

        A rejected conversion writes only the two reports; an accepted one writes the model last
        but one, so a reader never finds a model without its labels.
        """
        out = check_output_dir(out_dir, overwrite=overwrite)
        written: dict[str, Path] = {}
        if self.model is not None:
            written["labels"] = atomic_write_text(
                out / "labels.txt", "\n".join(self.labels) + "\n", overwrite=overwrite
            )
            written["model"] = atomic_write_bytes(out / "model.tflite", self.model, overwrite=overwrite)
        text = json.dumps(self.report, indent=2, sort_keys=False, default=_json_default) + "\n"
        written["report_json"] = atomic_write_text(out / "report.json", text, overwrite=True)
        written["report_md"] = atomic_write_text(
            out / "report.md", render_markdown(self.report), overwrite=True
        )
        return written

    def raise_for_status(self) -> None:
        if not self.accepted:
            raise DriftGateFailed(self.report["status"]["message"])


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)


def check_output_dir(out_dir: str | Path, *, overwrite: bool, inputs: Sequence[str | Path] = ()) -> Path:
    """Create ``out_dir``; refuse if it is a file, holds outputs (unless overwrite) or an input."""
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise UsageError(f"--out {out_dir} is a file; give a directory")
    protected = {Path(p).resolve() for p in inputs if Path(p).exists()}
    for f in OUTPUT_FILES:
        if (Path(out_dir) / f).resolve() in protected:
            raise UsageError(
                f"--out {out_dir} would overwrite the input {Path(out_dir) / f}; choose another directory"
            )
    out = ensure_output_dir(out_dir)
    if not overwrite:
        existing = [f for f in OUTPUT_FILES if (out / f).exists()]
        if existing:
            raise OutputExistsError(
                f"{out} already holds {', '.join(existing)}; pass --overwrite to replace them"
            )
    return out


def _detect_output(model: Any, probe: np.ndarray) -> tuple[str, str]:
    """('probabilities'|'logits', how it was decided)."""
    layers = getattr(model, "layers", None)
    if layers:
        last = layers[-1]
        act = getattr(last, "activation", None)
        act_name = getattr(act, "__name__", "") if act is not None else ""
        if type(last).__name__ == "Softmax" or act_name == "softmax":
            return "probabilities", f"final layer {last.name!r} applies softmax"
        if act_name == "linear":
            return "logits", f"final layer {last.name!r} is linear"
    y = np.asarray(model(probe, training=False), np.float64)
    if np.all(y >= -1e-6) and np.all(y <= 1 + 1e-6) and np.allclose(y.sum(axis=1), 1.0, atol=1e-3):
        return "probabilities", f"outputs on {len(probe)} images are non-negative and sum to 1"
    return "logits", f"outputs on {len(probe)} images do not sum to 1"


def _tool_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"shoplens": __version__, "python": platform.python_version()}
    for dist in ("tensorflow", "tf-keras", "keras", "tensorflow-model-optimization", "ai-edge-litert"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "not installed"
    return out


class _Stages:
    """The mutable state of one conversion, so each stage stays a short method."""

    def __init__(self, source: LoadedModel, options: ConvertOptions, recipe: Recipe) -> None:
        self.src = source
        self.o = options
        self.recipe = recipe
        self.report: dict[str, Any] = {}
        self.timings: dict[str, float] = {}

    def timed(self, name: str, t0: float) -> None:
        self.timings[name] = round(time.perf_counter() - t0, 2)


def convert(model_path: str | Path, options: ConvertOptions) -> ConversionResult:
    """Convert a Keras classifier; see the module docstring for the stages."""
    t_start = time.perf_counter()
    recipe = options.resolved_recipe()
    o = options
    loaded = load_keras_model(model_path, unsafe=o.unsafe_load)
    contract = find_sidecar_contract(loaded.path, o.contract)
    _, h, w, c = loaded.input_shape
    if (h, w, c) != (contract.height, contract.width, contract.channels):
        raise DataError(
            f"contract expects {contract.height}x{contract.width}x{contract.channels} "
            f"but the model input is {h}x{w}x{c}"
        )
    labels = find_labels(loaded.path, o.labels, loaded.num_classes)
    edits = o.prune is not None or recipe.qat or o.bake_preprocessing or contract.per_channel
    if loaded.format == "tf_saved_model" and edits:  # say so before minutes of data reading
        raise UsageError(
            f"{loaded.path} is a plain TF SavedModel (no Keras graph); pruning, QAT and folding need "
            "a Keras model (.keras, .h5 or a tf-keras SavedModel)"
        )
    st = _Stages(loaded, o, recipe)
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
    if eval_ds is not None and len(eval_ds.label_names) != len(labels):
        raise DataError(f"{eval_ds.name} has {len(eval_ds.label_names)} classes, the model {len(labels)}")
    st.timed("read_data", t0)

    probe = calibration[:16] if calibration is not None else (train[0][:16] if train else None)
    if probe is None:
        probe = (
            np.random.default_rng(0)
            .uniform(*(contract.value_range or (0.0, 1.0)), (4, h, w, c))
            .astype(np.float32)
        )
    output_kind, output_why = _detect_output(loaded.model, probe)

    source_eval: EvalResult | None = None
    if eval_ds is not None:
        t0 = time.perf_counter()
        source_eval = evaluate_keras_model(loaded.model, eval_ds, contract, labels, name=loaded.path.name,
                                           show_progress=show)  # fmt: skip
        st.timed("evaluate_source", t0)

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
            folded_in = _unnormalize(x, contract, fold.contract)
            diff = float(np.max(np.abs(np.asarray(loaded.model(x, training=False))
                                       - np.asarray(work_model(folded_in, training=False)))))  # fmt: skip
            if diff > 1e-3:
                raise ConversionError(f"folding the normalization changed the outputs by {diff:.2g}")
            st.report["fold"] = {"reason": fold.reason, "max_output_difference": diff}
            if calibration is not None:
                calibration = _unnormalize(calibration, contract, fold.contract)
            if train is not None:
                train = (_unnormalize(train[0], contract, fold.contract), train[1])
        st.timed("bridge", t0)
    st.report["bridge"] = {"used": bridged}

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
        st.report["prune"] = {
            "target_sparsity": float(o.prune),
            "layer_sparsity": pr.sparsity,
            "left_dense": pr.left_dense,
            "fine_tune": vars(pr.training),
        }
        st.timed("prune", t0)

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
        model_bytes, chosen, comparison = _auto(st, work_model, calibration, judge, trials)
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
        st.report["qat"] = {"preserve_sparsity": qr.preserve_sparsity, "fine_tune": vars(qr.training)}
        raw = quantize(qr.model, "int8", calibration=calibration, io_type=o.io_type, per_tensor=o.per_tensor,
                       show_progress=show)  # fmt: skip
        model_bytes, comparison = judge(recipe.name, raw)
        chosen = recipe.name
    else:
        raw = quantize(work_model, recipe.quantization, calibration=calibration, io_type=o.io_type,
                       per_tensor=o.per_tensor, show_progress=show)  # fmt: skip
        model_bytes, comparison = judge(recipe.name, raw)
        chosen = recipe.name
    st.timed("quantize_and_evaluate", t0)

    # report
    status_ok = comparison is None or comparison.passed
    st.report = {
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
        **st.report,
        "sizes": size_block(float_ref, model_bytes),
        "tflite": {**io_summary(model_bytes), "weight_sparsity": weight_sparsity(model_bytes)},
        "accuracy": comparison.to_dict() if comparison else None,
        "auto_trials": trials if recipe.quantization == "auto" else None,
        "latency": latency_ms(model_bytes, o.latency_runs, eval_ds) if o.latency_runs else None,
        "tools": _tool_versions(),
        "timings_s": {**st.timings, "total": round(time.perf_counter() - t_start, 2)},
    }
    if o.prune is not None:
        ws = st.report["tflite"]["weight_sparsity"]
        pruned = [v for k, v in ws.items() if v["op"] != "DEPTHWISE_CONV_2D"]
        total = sum(v["weights"] for v in pruned)
        st.report["prune"]["sparsity_after_conversion"] = (
            round(sum(v["sparsity"] * v["weights"] for v in pruned) / total, 4) if total else 0.0
        )
    if status_ok:
        msg = f"converted with recipe {chosen}"
        if comparison is not None:
            lo, hi = comparison.ci95
            msg += f": top-1 drop {comparison.drop:+.2f} pt (95 % CI {lo:+.2f}..{hi:+.2f})"
            if o.max_drop is not None:
                msg += f" within the {o.max_drop:g} pt budget"
        st.report["status"] = {"accepted": True, "message": msg}
        return ConversionResult(model_bytes, labels, st.report)
    if comparison is None:  # pragma: no cover - status_ok is True without a comparison
        raise ConversionError("internal: a rejected conversion without an accuracy comparison")
    msg = (
        f"top-1 drop {comparison.drop:.2f} pt (95 % CI {comparison.ci95[0]:+.2f}..{comparison.ci95[1]:+.2f}) "
        f"exceeds --max-drop {o.max_drop:g} pt with recipe {chosen}; no model written (see report.md)"
    )
    st.report["status"] = {"accepted": False, "message": msg}
    return ConversionResult(None, labels, st.report)


def _check_labels(y: np.ndarray, k: int, spec: str) -> None:
    if y.size and int(y.max()) >= k:
        raise DataError(f"{spec} has label {int(y.max())} but the model predicts {k} classes")


def _unnormalize(x: np.ndarray, old: PreprocessContract, new: PreprocessContract) -> np.ndarray:
    """Inputs made with ``old`` re-expressed under ``new`` (exact: both are affine in pixels)."""
    mean_o, std_o = np.asarray(old.mean, np.float32), np.asarray(old.std, np.float32)
    mean_n, std_n = np.asarray(new.mean, np.float32), np.asarray(new.std, np.float32)
    pixels = x * std_o + mean_o
    if new.color_order is not old.color_order and x.shape[-1] == 3:
        pixels = pixels[..., ::-1]
    return np.ascontiguousarray((pixels - mean_n) / std_n, dtype=np.float32)


def _judged(judge: Any, name: str, raw: bytes) -> tuple[bytes, AccuracyComparison]:
    packed, cmp_ = judge(name, raw)
    if cmp_ is None:  # pragma: no cover - auto checks --eval-data before it starts
        raise UsageError("--recipe auto needs --eval-data")
    return packed, cmp_


def _auto(
    st: _Stages, model: Any, calibration: np.ndarray | None, judge: Any, trials: list[dict[str, Any]]
) -> tuple[bytes, str, AccuracyComparison]:
    """Try int8, int8 with float fallback, dynamic, float16; keep the first within budget."""
    from shoplens_convert.selective import fallback_quantize, rank_layers

    o = st.o
    last: tuple[bytes, str, AccuracyComparison] | None = None
    for cand in st.recipe.candidates:
        if o.target == "edgetpu" and cand != "int8":
            continue  # the Edge TPU runs only full-integer graphs
        if cand == "int8-fallback":
            if calibration is None:
                raise UsageError("int8 with float fallback needs --calib-data")
            ranked = rank_layers(model, calibration, io_type=o.io_type, per_tensor=o.per_tensor)
            st.report.setdefault("fallback", {})["ranking"] = [
                {"tensor": e.tensor.split(";")[0], "op": e.op, "rmse_over_scale": round(e.rmse_over_scale, 4)}
                for e in ranked[:16]
            ]
            k = 1
            while k <= min(st.recipe.fallback_max_layers, len(ranked)):
                deny = [e.tensor for e in ranked[:k]]
                raw = fallback_quantize(model, calibration, deny, io_type=o.io_type, per_tensor=o.per_tensor)
                packed, cmp_ = _judged(judge, f"int8-fallback-{k}", raw)
                last = (packed, f"int8-fallback ({k} float layers)", cmp_)
                if cmp_.passed:
                    st.report["fallback"]["float_layers"] = [d.split(";")[0] for d in deny]
                    return last
                k *= 2
            continue
        raw = quantize(model, cand, calibration=calibration, io_type=o.io_type, per_tensor=o.per_tensor,
                       show_progress=o.show_progress)  # fmt: skip
        packed, cmp_ = _judged(judge, cand, raw)
        last = (packed, cand, cmp_)
        if cmp_.passed:
            return last
    if last is None:
        raise ConversionError("auto: no candidate recipe applies to this target")
    return last
