"""The model zoo in CI: a slice of the matrix that covers every recipe and every layer kind.

Each family is built by its own Keras Applications builder at reduced depth and width
(``benchmarks.zoo.MINI``: the same layer kinds and graph patterns as the stock model, a fraction of
the cost), trained briefly on real Fashion-MNIST images, saved as a Keras 3 ``.keras`` file and
converted by the real pipeline. Every cell must convert and agree with its Keras source within its
recipe's bound (``benchmarks.zoo.BOUNDS``). ``make zoo`` runs every cell on the stock models.

The slice: MobileNet (Edge TPU: the Reshape head must map; per-tensor int8), EfficientNetB0
(float16, dynamic; as a transfer model, nested Sequential with Rescaling + Normalization in the
graph, QAT), MobileNetV3Small (hard-swish and operation nodes, prune + PQAT; Edge TPU: hard swish
must be traced as ops the Edge TPU runs), ConvNeXtTiny (nested
stem and downsampling models, LayerNormalization, LayerScale, GELU, stochastic depth, a per-channel
in-model normalization composed into the contract and folded, prune + int8), DenseNet121 (a
BatchNormalization after Concatenate, AveragePooling2D: PQAT), ResNet50V2 (int8, auto). NASNetMobile's
SeparableConv2D and Cropping2D go through the bridge and TFMOT's wrapping in test_bridge_zoo.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import zoo

CELLS = [
    ("MobileNet", False, "edgetpu"),
    ("MobileNet", False, "int8-per-tensor"),
    ("EfficientNetB0", False, "float16"),
    ("EfficientNetB0", False, "dynamic"),
    ("EfficientNetB0", True, "qat-int8"),
    ("MobileNetV3Small", False, "pqat-int8"),
    ("MobileNetV3Small", False, "edgetpu"),
    ("ConvNeXtTiny", False, "prune-int8"),
    ("DenseNet121", False, "pqat-int8"),
    ("ResNet50V2", False, "int8"),
    ("ResNet50V2", False, "auto"),
]
# images and epochs per source: a briefly trained model answers near-ties that any rounding flips,
# and MobileNet v1 at half width needs the zoo's full budget before its agreement means something
# (2,048 images x 2 epochs: top-1 0.53 and int8 agreement 0.88; 4,096 x 3: 0.71 and 0.95).
TRAIN = {"MobileNet": (4096, 3)}


def test_the_slice_covers_every_recipe() -> None:
    assert {r for _, _, r in CELLS} == set(zoo.RECIPES)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, bool], Path]:
    root = tmp_path_factory.mktemp("zoo")
    return {
        (name, tl): zoo.make_source(
            zoo.MINI[name],
            tl,
            root / f"{name}{'_tl' if tl else ''}",
            images=TRAIN.get(name, (2048, 2))[0],
            epochs=TRAIN.get(name, (2048, 2))[1],
        )
        for name, tl in sorted({(n, t) for n, t, _ in CELLS})
    }


@pytest.mark.parametrize(("arch", "transfer", "recipe"), CELLS)
def test_cell_converts_and_agrees_with_its_source(sources, arch: str, transfer: bool, recipe: str) -> None:
    row = zoo.run_cell(sources[(arch, transfer)], recipe, eval_n=300, latency_runs=20)
    assert row["converts"], row.get("error")
    lo_agree, hi_delta = zoo.BOUNDS[recipe]
    assert row["agreement"] >= lo_agree, row
    assert row["abs_score_delta_mean"] <= hi_delta, row
    if recipe == "edgetpu":
        # the Reshape head maps too, and so does hard swish (not as HARD_SWISH, which it cannot run)
        assert row["edgetpu_ops_share"] == 1.0, row["edgetpu_summary"]
    if recipe == "auto":  # the guard asked for the cell's own agreement bound
        assert row["guard_min_agreement"] == pytest.approx(100 * lo_agree)
    if recipe in ("qat-int8", "prune-int8", "pqat-int8"):
        assert row["bridge"] and row["bridge_max_difference"] < 1e-3, row  # before any training
    if recipe in ("prune-int8", "pqat-int8"):  # pruning's fine-tune learnt the dense model's scores
        assert row["prune_targets"] == "source"
    if recipe in ("qat-int8", "pqat-int8"):  # QAT learnt the model handed over, even after pruning
        assert row["qat_teacher"] == {"qat-int8": "source", "pqat-int8": "source before pruning"}[recipe]
    if arch in ("EfficientNetB0", "MobileNetV3Small") and row["bridge"]:
        assert row["input_preprocessing"].startswith("absorbed into the preprocessing contract")


def test_hard_swish_is_swapped_only_while_converting() -> None:
    import keras

    from shoplens_convert.edgetpu_target import edgetpu_activations

    inner = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, activation="hard_swish")])
    model = keras.Sequential([inner, keras.layers.Activation("hard_silu"), keras.layers.Flatten()])
    before = [getattr(layer, "activation", None) for layer in model._flatten_layers(recursive=True)]
    with edgetpu_activations(model) as swapped:
        assert swapped == 2  # the nested model's convolution and the outer Activation
        assert model.layers[1].activation is not before[-2]
    after = [getattr(layer, "activation", None) for layer in model._flatten_layers(recursive=True)]
    assert after == before


def test_the_page_marks_a_cell_measured_against_a_retrained_source() -> None:
    from benchmarks.zoo_page import render_page

    def cell(recipe: str, top1: float) -> dict[str, object]:
        return {"recipe": recipe, "converts": True, "ratio_to_float32": 0.26, "agreement": 0.95,
                "abs_score_delta_mean": 0.01, "invoke_ms": 0.1, "seconds": 9.0, "source_top1": top1,
                "qat_targets": "source", "qat_teacher": "source before pruning",
                "batchnorm_recalibrated": 3, "prune_targets": "source"}  # fmt: skip

    model = {"model": "MobileNet", "arch": "MobileNet", "transfer": False, "contract": "tf", "params": 3e6}
    rows = [{**model, "cells": [cell("float16", 0.81), cell("int8", 0.81), cell("pqat-int8", 0.776)]}]
    page = render_page({"date": "d", "machine": "2 cores", "seconds": 60, "models": rows})
    row = next(line for line in page.splitlines() if line.startswith("| MobileNet |"))
    assert row.count("¶") == 1 and "¶ (source top-1 77.6 %)" in row.split("|")[-2]
    assert "¶ measured against the source trained again" in page
    rows[0]["cells"][-1]["source_top1"] = 0.81
    assert "¶" not in render_page({"date": "d", "machine": "2 cores", "seconds": 60, "models": rows})
