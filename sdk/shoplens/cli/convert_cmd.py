"""``shoplens convert``: prune, quantize and package a Keras classifier (thin layer over the library)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from shoplens.cli._common import (
    DATA_HELP,
    FineTuneTargets,
    IoType,
    JsonFlag,
    OverwriteFlag,
    QuietFlag,
    Ranges,
    Target,
    err_console,
    out_console,
    print_json,
    show_progress,
)

app = typer.Typer()


@app.command("convert")
def convert_command(
    model: Annotated[Path, typer.Argument(help="Keras model: .keras, .h5 or a SavedModel directory.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory.")],
    recipe: Annotated[
        str,
        typer.Option(
            "--recipe",
            "-r",
            help="float32, float16, dynamic, int8, qat-int8, pqat-int8, auto, or a recipe .json.",
        ),
    ] = "int8",
    labels: Annotated[
        Path | None, typer.Option("--labels", help="labels.txt (default: beside the model).")
    ] = None,
    contract: Annotated[
        Path | None,
        typer.Option("--contract", help="Preprocessing contract JSON (default: beside the model)."),
    ] = None,
    prune: Annotated[
        float | None, typer.Option("--prune", help="Target sparsity in (0, 1), e.g. 0.5.")
    ] = None,
    prune_channels: Annotated[
        float | None,
        typer.Option(
            "--prune-channels",
            help="Share of channels to remove in (0, 1), e.g. 0.5: a smaller, faster model (structured "
            "pruning; fine-tuned on --train-data for --prune-epochs).",
        ),
    ] = None,
    latency_budget: Annotated[
        float | None,
        typer.Option(
            "--latency-budget",
            help="Channel pruning with a ratio per layer: the share in (0, 1) of the dense model's MACs "
            "to keep, e.g. 0.3; layers lose channels where the scores change least (instead of "
            "--prune-channels).",
        ),
    ] = None,
    train_data: Annotated[
        str | None, typer.Option("--train-data", help=f"Fine-tuning data. {DATA_HELP}")
    ] = None,
    prune_epochs: Annotated[
        int, typer.Option("--prune-epochs", help="Fine-tuning epochs while pruning (weights or channels).")
    ] = 2,
    prune_freeze_bn: Annotated[
        bool, typer.Option("--prune-freeze-bn", help="Keep BatchNorm statistics fixed while pruning.")
    ] = False,
    prune_targets: Annotated[
        FineTuneTargets,
        typer.Option(
            "--prune-targets",
            help="What --prune's fine-tune learns: 'source', the dense model's own scores (distillation: "
            "the pruned model keeps answering as the model handed over), or 'labels' from --train-data.",
        ),
    ] = FineTuneTargets.source,
    qat_epochs: Annotated[
        int | None, typer.Option("--qat-epochs", help="QAT epochs (default: the recipe's).")
    ] = None,
    qat_targets: Annotated[
        FineTuneTargets,
        typer.Option(
            "--qat-targets",
            help="What QAT learns: 'source', the float model's own scores (it keeps answering as the "
            "model handed over), or 'labels' from --train-data (it goes on training).",
        ),
    ] = FineTuneTargets.source,
    learning_rate: Annotated[
        float | None, typer.Option("--learning-rate", help="Fine-tuning learning rate.")
    ] = None,
    calib_data: Annotated[
        str | None,
        typer.Option("--calib-data", help=f"int8 calibration data (default: --train-data). {DATA_HELP}"),
    ] = None,
    calib_count: Annotated[int, typer.Option("--calib-count", help="Calibration images.")] = 300,
    eval_data: Annotated[
        str | None, typer.Option("--eval-data", help=f"Accuracy-guard data. {DATA_HELP}")
    ] = None,
    max_drop: Annotated[
        float | None,
        typer.Option("--max-drop", help="Fail (exit 1, no model) if top-1 drops more than this, in points."),
    ] = None,
    min_agreement: Annotated[
        float | None,
        typer.Option(
            "--min-agreement",
            help="Fail (exit 1, no model) if fewer than this % of top-1 answers match the source's.",
        ),
    ] = None,
    target: Annotated[
        Target, typer.Option("--target", help="cpu or edgetpu (full-integer only).")
    ] = Target.cpu,
    embedding: Annotated[
        str | None,
        typer.Option("--embedding", help="Also write embedding.tflite from LAYER ('auto': the pooling)."),
    ] = None,
    io_type: Annotated[
        IoType, typer.Option("--io-type", help="int8 model input/output type: uint8 or int8.")
    ] = IoType.uint8,
    per_tensor: Annotated[
        bool, typer.Option("--per-tensor", help="Per-tensor instead of per-channel weights.")
    ] = False,
    ranges: Annotated[
        Ranges,
        typer.Option(
            "--ranges",
            help="int8 activation ranges: 'minmax' of the calibration images (TFLite's), or 'mse', the "
            "range with the least squared error over their values, which clips a long tail (EfficientNets).",
        ),
    ] = Ranges.minmax,
    bake_preprocessing: Annotated[
        bool,
        typer.Option("--bake-preprocessing", help="Fold normalization into the model (feed raw pixels)."),
    ] = False,
    bake_bgr: Annotated[
        bool,
        typer.Option("--bake-bgr", help="With --bake-preprocessing: the model takes BGR (OpenCV) frames."),
    ] = False,
    allow_double_normalization: Annotated[
        bool,
        typer.Option(
            "--allow-double-normalization",
            help="The model normalizes its input itself and was trained on input normalized twice.",
        ),
    ] = False,
    unsafe_load: Annotated[
        bool, typer.Option("--unsafe-load", help="Allow Lambda layers (runs code from the file).")
    ] = False,
    name: Annotated[str | None, typer.Option("--name", help="Model name in the metadata.")] = None,
    version: Annotated[str, typer.Option("--model-version", help="Model version in the metadata.")] = "1",
    bundle: Annotated[
        bool, typer.Option("--bundle", help="Also write OUT/bundle: golden frames, expected tensors, scores.")
    ] = False,
    overwrite: OverwriteFlag = False,
    json_out: JsonFlag = False,
    quiet: QuietFlag = False,
) -> None:
    """Convert a Keras classifier into a self-describing TFLite model, under an accuracy guard.

    Example: shoplens convert m.keras -o out/m --calib-data fashion-mnist:train --eval-data fashion-mnist:test
    """
    from shoplens_convert.pipeline import ConvertOptions, check_output_dir, convert  # lazy: TensorFlow

    options = ConvertOptions(
        recipe=recipe, labels=labels, contract=contract, prune=prune, prune_channels=prune_channels,
        latency_budget=latency_budget, train_data=train_data, prune_epochs=prune_epochs,
        prune_freeze_batchnorm=prune_freeze_bn, prune_targets=prune_targets.value, qat_epochs=qat_epochs,
        qat_targets=qat_targets.value, learning_rate=learning_rate, calib_data=calib_data,
        calib_count=calib_count, eval_data=eval_data, max_drop=max_drop, min_agreement=min_agreement,
        target=target.value, io_type=io_type.value, embedding=embedding, per_tensor=per_tensor,
        ranges=ranges.value,
        bake_preprocessing=bake_preprocessing, bake_bgr=bake_bgr,
        allow_double_normalization=allow_double_normalization,
        unsafe_load=unsafe_load, name=name, version=version, show_progress=show_progress(json_out, quiet),
    )  # fmt: skip
    options.resolved_recipe()  # unknown recipe: fail before any work
    inputs = [model, labels, contract, model.parent / "labels.txt", model.parent / "contract.json"]
    check_output_dir(out, overwrite=overwrite, inputs=[p for p in inputs if p is not None], create=False)
    result = convert(model, options)
    saved = result.save(out, overwrite=overwrite, bundle=bundle)
    report = saved.report
    if json_out:
        print_json(report)
    elif not quiet:
        for w in report.get("warnings", []):
            err_console.print(f"warning: {w}")
        if result.accepted:
            s = report["sizes"]
            out_console.print(report["status"]["message"])
            out_console.print(
                f"{out / 'model.tflite'}: {s['model_bytes'] / 1024:.1f} KiB "
                f"({s['ratio_to_float32']:.3f}x float32; gzip {s['gzip_ratio_to_float32_gzip']:.3f}x); "
                f"report in {out / 'report.md'}"
            )
            if "edgetpu" in report:
                out_console.print(f"Edge TPU pre-flight: {report['edgetpu']['preflight']['summary']}")
            for m in saved.messages:
                out_console.print(m)
    result.raise_for_status()
