"""Structured (channel) pruning: whole channels removed, grouped across residual Adds, converted,
loaded by the SDK and by MediaPipe, and refused by the guard when it breaks accuracy."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import one_line_error, run_cli
from shoplens.errors import UsageError
from shoplens_convert.channels import plan_channels, prune_channels


def _load(path: Path):
    import keras

    return keras.saving.load_model(path, compile=False)


def _x(n: int = 16) -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, (n, 32, 32, 3)).astype(np.float32)


def _convert_json(block_model: Path, out: Path, *how: str, train: int, epochs: int, evaluate: int) -> dict:
    """``shoplens convert --recipe int8`` with channel pruning (``how``): its JSON report."""
    import json

    proc = run_cli("convert", str(block_model), "--recipe", "int8", *how,
                   "--train-data", f"fashion-mnist:train:{train}", "--prune-epochs", str(epochs),
                   "--calib-data", "fashion-mnist:train:200", "--eval-data", f"fashion-mnist:test:{evaluate}",
                   "--max-drop", "100", "--out", str(out), "--json", "--quiet")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


def test_ratio_zero_is_the_source_exactly(block_model) -> None:
    src = _load(block_model)
    res = prune_channels(src, 0.0)
    assert res.params_after == res.params_before and res.macs_after == res.macs_before
    np.testing.assert_allclose(np.asarray(res.model(_x())), np.asarray(src(_x())), atol=1e-6)


def test_residual_channels_go_together_and_slicing_is_exact(block_model) -> None:
    src = _load(block_model)
    plan = plan_channels(src, 0.5)
    stem, project = plan.out_group["stem"], plan.out_group["project"]
    assert stem == project  # the Add ties the stem's and the project's channels into one group
    groups = {tuple(g["layers"]): g for g in plan.group_report()}
    assert groups[("stem", "project")]["channels_after"] == 8
    assert groups[("probs",)]["channels_after"] == 10  # the classes stay
    res = prune_channels(src, 0.5)
    slim = res.model
    assert slim.get_layer("stem").filters == slim.get_layer("project").filters == 8
    assert slim.get_layer("dw").kernel.shape[2] == 8 and slim.get_layer("head").filters == 32
    assert res.macs_after < 0.4 * res.macs_before
    # the same model with the removed channels' inputs zeroed in every consumer answers exactly as
    # the slimmed one: the slicing kept the right channels everywhere (kernels, BatchNorm, depthwise)
    masked = _load(block_model)
    for name in ("project", "head", "probs"):  # the consumers of pruned groups (dw is per channel)
        group = plan.in_group[name]
        assert group in plan.keep
        layer = masked.get_layer(name)
        weights = layer.get_weights()
        drop = np.setdiff1d(np.arange(weights[0].shape[-2]), plan.keep[group])
        weights[0][..., drop, :] = 0.0
        layer.set_weights(weights)
    # the Add sums a removed stem channel and a removed project channel, feeding only zeroed inputs
    np.testing.assert_allclose(np.asarray(slim(_x())), np.asarray(masked(_x())), atol=1e-5)


def test_bad_ratios_and_nothing_to_prune() -> None:
    import keras

    inp = keras.Input((8, 8, 3))
    only_head = keras.Model(inp, keras.layers.Dense(4)(keras.layers.Flatten()(inp)))
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(UsageError, match="prune-channels"):
            plan_channels(only_head, bad)
    with pytest.raises(UsageError, match="no layer of this model can lose channels"):
        prune_channels(only_head, 0.5)


def test_converts_loads_in_the_sdk_and_mediapipe_and_is_smaller(
    block_model, tmp_path: Path, fmnist_test
) -> None:
    mp = pytest.importorskip("mediapipe", reason="MediaPipe is installed by make setup")
    from mediapipe.tasks.python import BaseOptions, vision

    from shoplens import Classifier

    out = tmp_path / "slim"
    report = _convert_json(block_model, out, "--prune-channels", "0.5", train=2000, epochs=2, evaluate=300)
    c = report["prune_channels"]
    assert c["params_after"] < 0.4 * c["params_before"]
    assert c["int8_bytes_after"] < 0.6 * c["int8_bytes_before"]
    assert c["invoke_ms_after"] is not None and c["groups"]
    assert "Channel pruning (50%" in (out / "report.md").read_text()
    x, y = fmnist_test
    opts = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(out / "model.tflite")))
    agree = right = 0
    with vision.ImageClassifier.create_from_options(opts) as mp_clf, Classifier.create_from_model_path(
        out / "model.tflite"
    ) as ours:
        for img, label in zip(x[:100], y[:100], strict=True):
            rgb = np.ascontiguousarray(cv2.cvtColor(cv2.resize(img, (32, 32)), cv2.COLOR_GRAY2RGB))
            top = mp_clf.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb)).classifications[0]
            mine = ours.classify(rgb[..., ::-1]).categories[0]
            agree += top.categories[0].index == mine.index
            right += mine.index == label
    assert agree >= 90 and right >= 40, (agree, right)


def test_the_guard_refuses_a_ratio_that_breaks_accuracy(block_model, tmp_path: Path) -> None:
    out = tmp_path / "broken"
    proc = run_cli("convert", str(block_model), "--recipe", "int8", "--prune-channels", "0.9",
                   "--train-data", "fashion-mnist:train:256", "--prune-epochs", "1",
                   "--learning-rate", "1e-5",
                   "--calib-data", "fashion-mnist:train:100", "--eval-data", "fashion-mnist:test:300",
                   "--max-drop", "1", "--out", str(out), "--quiet")  # fmt: skip
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert not (out / "model.tflite").exists()
    bad = run_cli("convert", str(block_model), "--prune-channels", "1.2",
                  "--train-data", "fashion-mnist:train:10", "--out", str(tmp_path / "x"))  # fmt: skip
    one_line_error(bad, 2, "--prune-channels")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("arch", ["MobileNetV2", "MobileNetV3Small", "ResNet50", "EfficientNetB0"])
def test_keras_applications_lose_channels(arch: str) -> None:
    import keras

    model = getattr(keras.applications, arch)(weights=None, input_shape=(32, 32, 3), classes=10)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    # the same weights through the same graph (oneDNN may reorder sums between two calls: 1e-8)
    same = prune_channels(model, 0.0).model
    np.testing.assert_allclose(np.asarray(same(x)), np.asarray(model(x)), atol=1e-6)
    res = prune_channels(model, 0.5)
    assert res.macs_after < 0.6 * res.macs_before and res.params_after < 0.6 * res.params_before
    assert np.asarray(res.model(x)).shape == (2, 10)
    whole = [g for g in res.groups if g["channels_after"] == g["channels_before"]]
    assert all(g["why"] for g in whole)  # every group left whole says why
    if arch in ("MobileNetV3Small", "EfficientNetB0"):  # squeeze-and-excite: hard-swish ops, Multiply
        assert any(g["channels_after"] < g["channels_before"] for g in res.groups if len(g["layers"]) > 1)


def test_qat_and_the_edge_tpu_run_on_the_slimmed_model(block_model, tmp_path: Path) -> None:
    import json

    out = tmp_path / "slim_qat"
    proc = run_cli("convert", str(block_model), "--recipe", "qat-int8", "--prune-channels", "0.5",
                   "--target", "edgetpu", "--train-data", "fashion-mnist:train:1000", "--prune-epochs", "1",
                   "--calib-data", "fashion-mnist:train:100", "--eval-data", "fashion-mnist:test:200",
                   "--max-drop", "100", "--out", str(out), "--json", "--quiet")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    # the bridge rebuilt the slimmed graph (not the source's) and QAT trained it
    assert r["bridge"]["used"] and r["bridge"]["max_output_difference"] < 1e-3
    assert r["qat"] and r["prune_channels"]["params_after"] < r["prune_channels"]["params_before"]
    assert r["qat"]["targets"] == "source"  # the default: QAT learnt the slimmed float model's scores
    assert r["edgetpu"]["preflight"]["op_share"] == 1.0
    assert "learning the float model's scores (distillation)" in (out / "report.md").read_text()


def test_a_budget_is_met_with_per_layer_ratios_that_change_the_scores_least(block_model) -> None:
    from shoplens_convert.channel_budget import STEPS, _kl, _scores, budget_ratios

    src = _load(block_model)
    x = _x(128)
    plan = budget_ratios(src, x, 0.5)
    assert plan.macs_planned <= 0.5 * plan.macs_dense and set(plan.ratios.values()) <= set(STEPS)
    slim = prune_channels(src, 0.0, ratios=plan.ratios)
    assert slim.macs_after == plan.macs_planned and slim.macs_after < slim.macs_before
    assert set(plan.sensitivity) >= set(plan.ratios)  # every group was tried alone
    # against the uniform ratio that reaches the same MACs, the planned model's scores stay closer
    # to the dense model's (before any fine-tuning): it cut where the scores care least
    ratios = (0.25, 0.375, 0.5, 0.625, 0.75)
    uniform = next(r for r in ratios if prune_channels(src, r).macs_after <= plan.macs_planned)
    ref = _scores(src, x)
    assert _kl(ref, _scores(slim.model, x)) <= _kl(ref, _scores(prune_channels(src, uniform).model, x))


def test_bad_budgets_are_one_line_errors(block_model, tmp_path: Path) -> None:
    from shoplens_convert.channel_budget import budget_ratios

    src = _load(block_model)
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(UsageError, match="--latency-budget"):
            budget_ratios(src, _x(8), bad)
    with pytest.raises(UsageError, match="cannot be met: removing 75 % of the channels of every prunable"):
        budget_ratios(src, _x(8), 0.001)
    both = run_cli("convert", str(block_model), "--prune-channels", "0.5", "--latency-budget", "0.5",
                   "--train-data", "fashion-mnist:train:10", "--out", str(tmp_path / "x"))  # fmt: skip
    one_line_error(both, 2, "not both")
    alone = run_cli("convert", str(block_model), "--latency-budget", "0.5", "--out", str(tmp_path / "x"))
    one_line_error(alone, 2, "--latency-budget needs --train-data")
    assert not (tmp_path / "x").exists()


def test_convert_with_a_latency_budget(block_model, tmp_path: Path) -> None:
    out = tmp_path / "budget"
    c = _convert_json(block_model, out, "--latency-budget", "0.5", train=1000, epochs=1, evaluate=200)[
        "prune_channels"
    ]
    assert c["ratio"] is None and c["budget"]["planned_share"] <= 0.5
    assert c["macs_after"] == c["budget"]["macs_planned"] and "per-group ratios" in c["criterion"]
    assert "Channel pruning (per-group ratios, to 0.5 x the MACs)" in (out / "report.md").read_text()
