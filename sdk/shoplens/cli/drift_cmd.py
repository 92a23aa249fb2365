"""``shoplens drift``: accuracy drift between a reference and a candidate, gated, with the likely cause.

Exit codes: 0 the gate passed, 1 the gate failed, 2 usage or input error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from shoplens.cli._common import JsonFlag, OverwriteFlag, out_console, print_json, show_progress
from shoplens.drift.report import gate_limits, label_name
from shoplens.errors import DriftGateFailed

app = typer.Typer()


def _print_report(d: dict[str, Any]) -> None:
    t = Table(title=f"drift: {d['candidate']} vs {d['reference']} on {d['data']} ({d['n']} images)")
    t.add_column("metric")
    t.add_column("reference", justify="right")
    t.add_column("candidate", justify="right")
    t.add_column("drop (pts)", justify="right")  # one sign everywhere: positive = the candidate is worse
    lo, hi = d["drop_ci95_pts"]
    t.add_row("top-1", f"{100 * d['reference_top1']:.2f} %", f"{100 * d['candidate_top1']:.2f} %",
              f"{d['drop_pts']:.2f} (95 % CI {lo:.2f}..{hi:.2f})")  # fmt: skip
    t.add_row("top-5", f"{100 * d['reference_top5']:.2f} %", f"{100 * d['candidate_top5']:.2f} %",
              f"{100 * (d['reference_top5'] - d['candidate_top5']):.2f}")  # fmt: skip
    t.add_row("agreement", "", "", f"{100 * d['agreement']:.2f} %")
    t.add_row("mean KL", "", "", f"{d['kl_mean']:.5f}")
    t.add_row(
        "|score delta| mean / max",
        "",
        "",
        f"{d['abs_score_delta_mean']:.4f} / {d['abs_score_delta_max']:.4f}",
    )
    out_console.print(t)
    pc = Table(title="per class, worst first")
    for col in ("class", "images", "reference", "candidate", "drop (pts)", "cand. F1"):
        pc.add_column(col, justify="left" if col == "class" else "right")
    for r in d["per_class"][:10]:
        ra, ca = r["reference_accuracy"], r["candidate_accuracy"]
        pc.add_row(str(r["label"]), str(r["support"]), "-" if ra is None else f"{100 * ra:.2f} %",
                   "-" if ca is None else f"{100 * ca:.2f} %", f"{r['delta_pts']:.2f}",
                   f"{r['candidate']['f1']:.3f}")  # fmt: skip
    out_console.print(pc)
    bad_frames = [f for f in d.get("per_frame", []) if not f["ok"]]
    if d.get("per_frame"):
        out_console.print(f"frames: {len(d['per_frame']) - len(bad_frames)} of {len(d['per_frame'])} match")
        for f in bad_frames[:10]:
            ref, cand = (label_name(d["labels"], f[k]) for k in ("reference_top1", "candidate_top1"))
            out_console.print(f"  {f['id']}: top-1 {ref} vs {cand}, "
                              f"max |score delta| {f['max_abs_delta']:.4f}")  # fmt: skip
    if d["disagreeing_total"]:
        ids = ", ".join(map(str, d["disagreeing_ids"][:8]))
        out_console.print(f"disagreeing images: {d['disagreeing_total']} (e.g. {ids})")
    out_console.print(f"likely cause: {d['likely_cause']}")
    gate = d["gate"]
    verdict = "[bold green]gate passed[/bold green]" if gate["passed"] else "[bold red]gate failed[/bold red]"
    out_console.print(f"{verdict} ({gate_limits(gate)})")


@app.command("drift")
def drift_command(
    reference: Annotated[
        Path | None, typer.Argument(help="Reference: a Keras model (.keras, .h5, SavedModel) or a .tflite.")
    ] = None,
    candidate: Annotated[
        Path | None, typer.Argument(help="Candidate: a .tflite, or a device-outputs file (.json or .csv).")
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data", "-d", help="Data spec: fashion-mnist:test[:N], an image folder, or kiosk:DIR."
        ),
    ] = None,
    bundle: Annotated[
        Path | None, typer.Option("--bundle", help="Check a device against a bundle (with --device-outputs).")
    ] = None,
    device_outputs: Annotated[
        Path | None,
        typer.Option("--device-outputs", help="Scores the device computed for the bundle's frames."),
    ] = None,
    max_drop: Annotated[
        float | None, typer.Option("--max-drop", min=0, help="Largest allowed top-1 drop, in points.")
    ] = None,
    min_agreement: Annotated[
        float | None, typer.Option("--min-agreement", min=0, max=100, help="Smallest top-1 agreement, in %.")
    ] = None,
    max_class_drop: Annotated[
        float | None, typer.Option("--max-class-drop", min=0, help="Largest per-class top-1 drop, in points.")
    ] = None,
    contract: Annotated[
        Path | None, typer.Option("--contract", help="Contract of a Keras reference (default: beside it).")
    ] = None,
    labels: Annotated[
        Path | None, typer.Option("--labels", help="labels.txt of a Keras reference (default: beside it).")
    ] = None,
    cause_sample: Annotated[
        int, typer.Option("--cause-sample", min=0, help="Images re-run per alternative contract (0: off).")
    ] = 1000,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per batch.")] = 64,
    unsafe_load: Annotated[
        bool, typer.Option("--unsafe-load", help="Allow Lambda layers (runs code from the file).")
    ] = False,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write a self-contained HTML report.")
    ] = None,
    save: Annotated[
        Path | None, typer.Option("--save", help="Also write the JSON report to this file.")
    ] = None,
    runner: Annotated[
        str | None,
        typer.Option("--runner", help="Run on Apache Beam: direct, dask, flink, spark, dataflow."),
    ] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Beam worker processes.")] = 2,
    slices: Annotated[
        list[str] | None, typer.Option("--slice", help="Beam: also report per value of this catalog column.")
    ] = None,
    max_slice_drop: Annotated[
        float | None, typer.Option("--max-slice-drop", min=0, help="Beam: largest top-1 drop of any slice.")
    ] = None,
    max_bad: Annotated[
        float, typer.Option("--max-bad", min=0, max=100, help="Beam: largest share of unusable images, in %.")
    ] = 1.0,
    beam_options: Annotated[
        list[str] | None, typer.Option("--beam-option", help="Beam: a pipeline flag, e.g. --project=p.")
    ] = None,
    allow_collapse: Annotated[
        bool, typer.Option("--allow-collapse", help="Do not fail the gate on a near-constant candidate.")
    ] = False,
    overwrite: OverwriteFlag = False,
    json_out: JsonFlag = False,
) -> None:
    """Compare a candidate with its reference on the same images; gate on the drop and agreement.

    Example: shoplens drift model.keras out/int8/model.tflite --data fashion-mnist:test --max-drop 1
    """
    from shoplens.data.spec import open_dataset
    from shoplens.drift import DeviceOutputs, open_model, plan_drift, run_drift

    if runner is not None:
        _catalog_drift(reference, candidate, data, runner=runner, workers=workers, slices=slices or [],
                       max_slice_drop=max_slice_drop, max_bad=max_bad, beam_args=beam_options or [],
                       limits={"max_drop": max_drop, "min_agreement": min_agreement,
                               "max_class_drop": max_class_drop, "allow_collapse": allow_collapse},
                       cause_sample=cause_sample, batch_size=batch_size, html=html, save=save,
                       overwrite=overwrite, json_out=json_out, bundle=bundle)  # fmt: skip
        return
    plan = plan_drift(reference, candidate, data, bundle=bundle, device_outputs=device_outputs,
                      outputs=[html, save], overwrite=overwrite)  # fmt: skip
    cand: Any = DeviceOutputs.load(plan.candidate) if plan.candidate_is_outputs else None
    ref_model = open_model(plan.reference, keras_opener=_keras_reference, contract_path=contract,
                           labels_path=labels, unsafe_load=unsafe_load)  # fmt: skip
    try:
        if cand is None:
            cand = open_model(plan.candidate)
        dataset = plan.dataset
        if dataset is None:
            dataset = open_dataset(str(plan.data), labels=ref_model.labels)
        report = run_drift(
            ref_model, cand, dataset, batch_size=batch_size, cause_sample=cause_sample,
            analyse=None if cause_sample else False, score_tolerance=plan.score_tolerance,
            show_progress=show_progress(json_out),
        )  # fmt: skip
    finally:
        ref_model.close()
        if cand is not None and hasattr(cand, "close"):
            cand.close()
    failures = report.check_gate(
        max_drop=max_drop, min_agreement=min_agreement, max_class_drop=max_class_drop,
        score_tolerance=plan.score_tolerance, allow_collapse=allow_collapse,
    )  # fmt: skip
    if save is not None:
        report.save(save, overwrite=overwrite)
    if html is not None:
        report.save_html(html, overwrite=overwrite, dataset=dataset)
    d = report.to_dict()
    if json_out:
        print_json(d)
    else:
        _print_report(d)
    if failures:
        raise DriftGateFailed(f"drift gate failed: {'; '.join(failures)}. Likely cause: {d['likely_cause']}")


def _keras_reference(path: Path, **kwargs: Any) -> Any:
    """A Keras reference through the converter (imported only here, only when needed)."""
    from shoplens.errors import DependencyError

    try:
        from shoplens_convert.drift_model import KerasDriftModel
    except DependencyError as exc:
        raise DependencyError(f"a Keras reference needs TensorFlow: {exc.message}") from None
    return KerasDriftModel(path, **kwargs)


def _catalog_drift(
    reference: Path | None, candidate: Path | None, data: str | None, *, runner: str, workers: int,
    slices: list[str], max_slice_drop: float | None, max_bad: float, beam_args: list[str],
    limits: dict[str, Any], cause_sample: int, batch_size: int, html: Path | None, save: Path | None,
    overwrite: bool, json_out: bool, bundle: Path | None,
) -> None:  # fmt: skip
    """``drift --runner``: the catalog on Apache Beam (shoplens.beam), same report and gate."""
    from shoplens.drift import plan_drift
    from shoplens.errors import UsageError

    if bundle is not None:
        raise UsageError("--runner reads a catalog; a bundle's frames are checked without it")
    plan = plan_drift(reference, candidate, data, outputs=[html, save], overwrite=overwrite)
    if plan.reference.suffix.lower() != ".tflite":
        raise UsageError(
            "--runner needs a .tflite reference (Beam workers run the runtime only, not TensorFlow); "
            "convert the Keras model first, or drop --runner"
        )
    from shoplens.beam import run_catalog_drift  # lazy: Apache Beam only here

    run = run_catalog_drift(plan.reference, plan.candidate, str(plan.data), runner=runner, workers=workers,
                            slices=slices, batch_size=batch_size, cause_sample=cause_sample,
                            beam_args=beam_args)  # fmt: skip
    failures = run.check_gate(max_bad_pct=max_bad, max_slice_drop=max_slice_drop, **limits)
    d = run.to_dict()
    if save is not None:
        from shoplens.internal.atomic import atomic_write_text

        atomic_write_text(save, json.dumps(d, indent=2) + "\n", overwrite=overwrite)
    if html is not None:
        run.report.save_html(html, overwrite=overwrite)
    if json_out:
        print_json(d)
    else:
        _print_report(d)
        c = d["catalog"]
        out_console.print(
            f"catalog on Beam ({c['runner']}, {c['workers']} workers): {c['images']} images, "
            f"{c['bad']} unusable ({100 * c['bad_share']:.2f} %), {c['seconds']:.1f} s; "
            f"counters {c['counters']}"
        )
        for s in c["slices"][:20]:
            out_console.print(f"  slice {s['slice']}: {s['n']} images, drop {s['drop_pts']:+.2f} pts, "
                              f"agreement {100 * s['agreement']:.2f} %")  # fmt: skip
        for b in c["dead_letters"][:10]:
            out_console.print(f"  unusable {b['id']}: {b['reason']}")
    if failures:
        raise DriftGateFailed(f"drift gate failed: {'; '.join(failures)}. Likely cause: {d['likely_cause']}")
