"""``ConvertOptions``: everything ``shoplens convert`` takes, validated when built."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shoplens.errors import UsageError
from shoplens_convert.recipes import Recipe, load_recipe

__all__ = ["FINE_TUNE_TARGETS", "RANGES", "TARGETS", "ConvertOptions"]

TARGETS = ("cpu", "edgetpu")
# what pruning's and QAT's fine-tunes learn: the float model's own scores, or the labels
FINE_TUNE_TARGETS = ("source", "labels")
RANGES = ("minmax", "mse")  # int8 activation ranges: the calibrator's min/max, or least squared error


@dataclass(frozen=True)
class ConvertOptions:
    """Everything ``shoplens convert`` takes, validated when built (paths are checked at use).

    Example:
      >>> ConvertOptions(recipe="qat-int8", train_data="fashion-mnist:train:2000",
      ...                calib_data="fashion-mnist:train:300").recipe
      'qat-int8'

    Raises:
      UsageError: a value out of range or options that contradict each other.
    """

    recipe: str = "int8"
    labels: Path | None = None
    contract: Path | None = None
    prune: float | None = None
    prune_channels: float | None = None  # share of the channels removed (structured pruning)
    latency_budget: float | None = None  # channel pruning with per-layer ratios to this share of the MACs
    train_data: str | None = None
    prune_epochs: int = 2
    prune_freeze_batchnorm: bool = False
    prune_targets: str = "source"  # pruning's fine-tune learns the dense model's scores or "labels"
    qat_epochs: int | None = None  # None: the recipe's own
    qat_targets: str = "source"  # QAT learns the float model's scores (distillation) or "labels"
    learning_rate: float | None = None
    calib_data: str | None = None
    calib_count: int = 300
    eval_data: str | None = None
    max_drop: float | None = None
    min_agreement: float | None = None  # top-1 agreement with the source, in %
    target: str = "cpu"
    io_type: str = "uint8"
    per_tensor: bool = False
    ranges: str = "minmax"  # "mse": int8 activation ranges that fit the bulk (shoplens_convert.ranges)
    bake_preprocessing: bool = False
    bake_bgr: bool = False
    allow_double_normalization: bool = False  # the model normalizes and the contract too, on purpose
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
        if self.prune_channels is not None and not 0.0 < float(self.prune_channels) < 1.0:
            raise UsageError(
                f"--prune-channels (the share of channels removed) must be strictly between 0 and 1, "
                f"got {self.prune_channels}"
            )
        if self.latency_budget is not None and not 0.0 < float(self.latency_budget) < 1.0:
            raise UsageError(
                f"--latency-budget (a share of the dense model's MACs) must be strictly between 0 and 1, "
                f"got {self.latency_budget}"
            )
        if self.latency_budget is not None and self.prune_channels is not None:
            raise UsageError("give --prune-channels R (one ratio everywhere) or --latency-budget B, not both")
        if self.channel_pruning and not self.train_data:
            flag = "--prune-channels" if self.prune_channels is not None else "--latency-budget"
            raise UsageError(f"{flag} needs --train-data to fine-tune the slimmed model on")
        if self.max_drop is not None and not (np.isfinite(self.max_drop) and self.max_drop >= 0):
            raise UsageError(f"--max-drop must be >= 0 points, got {self.max_drop}")
        if self.max_drop is not None and not self.eval_data:
            raise UsageError("--max-drop needs --eval-data to measure the drop on")
        if self.min_agreement is not None and not (np.isfinite(self.min_agreement)
                                                   and 0 <= self.min_agreement <= 100):  # fmt: skip
            raise UsageError(f"--min-agreement must be in 0..100 %, got {self.min_agreement}")
        if self.min_agreement is not None and not self.eval_data:
            raise UsageError("--min-agreement needs --eval-data to measure the agreement on")
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
        for flag, value, allowed in (("--qat-targets", self.qat_targets, FINE_TUNE_TARGETS),
                                     ("--prune-targets", self.prune_targets, FINE_TUNE_TARGETS),
                                     ("--ranges", self.ranges, RANGES)):  # fmt: skip
            if value not in allowed:
                raise UsageError(f"{flag} must be {' or '.join(allowed)}, got {value!r}")
        if self.target == "edgetpu" and self.io_type != "uint8":
            raise UsageError("--target edgetpu uses uint8 input and output; drop --io-type int8")
        if self.bake_bgr and not self.bake_preprocessing:
            raise UsageError("--bake-bgr needs --bake-preprocessing")
        if self.latency_runs < 0:
            raise UsageError("latency runs must be >= 0")

    @property
    def channel_pruning(self) -> bool:
        """Structured pruning asked for: one ratio (``prune_channels``) or a budget."""
        return self.prune_channels is not None or self.latency_budget is not None

    def activation_ranges(self, recipe: Recipe) -> str | None:
        """How post-training int8 sets activation ranges under ``recipe``; None where it does not
        (float recipes; a QAT model carries the ranges it learnt)."""
        return None if recipe.qat or recipe.quantization not in ("int8", "auto") else self.ranges

    def resolved_recipe(self) -> Recipe:
        """The recipe, checked against the other options (pruning, training data, target)."""
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
