"""``shoplens eval``: accuracy of a Keras or ``.tflite`` model on a data spec, through the SDK's
preprocessing (a ``.tflite`` runs in the SDK Classifier, without TensorFlow)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from shoplens.cli._common import JsonFlag, OverwriteFlag, out_console, print_json, show_progress

app = typer.Typer()


@app.command("eval")
def eval_command(
    model: Annotated[
        Path, typer.Argument(help="A Keras model (.keras, .h5, SavedModel) or a .tflite.", exists=True)
    ],
    data: Annotated[
        str, typer.Option("--data", "-d", help="Data spec, e.g. fashion-mnist:test or kiosk:DIR.")
    ],
    contract: Annotated[
        Path | None,
        typer.Option("--contract", help="Preprocessing contract JSON (default: beside the model)."),
    ] = None,
    labels: Annotated[
        Path | None, typer.Option("--labels", help="labels.txt (default: beside the model).")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per batch.")] = 256,
    unsafe_load: Annotated[
        bool, typer.Option("--unsafe-load", help="Allow Lambda layers (runs code from the file).")
    ] = False,
    save: Annotated[Path | None, typer.Option("--save", help="Also write the result as JSON here.")] = None,
    overwrite: OverwriteFlag = False,
    json_out: JsonFlag = False,
) -> None:
    """Evaluate a model's top-1/top-5 accuracy on a data spec, through the SDK preprocessing.

    Example: shoplens eval out/int8/model.tflite --data fashion-mnist:test
    """
    from shoplens.internal.outputs import check_output_file

    if save is not None:  # before the work: never the model itself, never an existing file by surprise
        check_output_file(save, inputs=[model, contract, labels], overwrite=overwrite)
    if model.suffix.lower() == ".tflite":
        from shoplens.errors import UsageError
        from shoplens.metrics import evaluate_tflite

        if contract is not None or labels is not None:
            raise UsageError("--contract and --labels apply to a Keras model; a .tflite carries its own")
        result = evaluate_tflite(model, data, batch_size=batch_size,
                                 show_progress=show_progress(json_out))  # fmt: skip
    else:
        from shoplens_convert.evaluate import evaluate_keras  # lazy: TensorFlow only when needed

        result = evaluate_keras(
            model, data, contract_path=contract, labels_path=labels, batch_size=batch_size,
            show_progress=show_progress(json_out), unsafe_load=unsafe_load,
        )  # fmt: skip
    if save is not None:
        result.save(save, overwrite=overwrite)
    if json_out:
        print_json(result.to_dict())
        return
    out_console.print(
        f"[bold]{result.model}[/bold] on {result.data}: top-1 {result.top1 * 100:.2f} %, "
        f"top-5 {result.top5 * 100:.2f} % ({result.n} images, {result.seconds:.1f} s)"
    )
    for name, acc in result.per_class_accuracy.items():
        out_console.print(f"  {name:<20} {acc * 100:6.2f} %" if acc == acc else f"  {name:<20} (no images)")
