"""The work model: the source as the later stages need it, and the contract it expects.

Pruning and QAT need tf-keras (TFMOT), so the Keras 3 source is bridged (:mod:`.bridge`). On the
way, the model's own input preprocessing (``Rescaling``, ``Normalization``, constant arithmetic
at the input) is taken out of the graph and composed into the preprocessing contract, because
TFMOT cannot quantize those layers and a contract expresses them exactly; a per-channel
normalization that standard metadata cannot carry is folded into a 1x1 convolution
(:mod:`.fold`). Post-training recipes need none of this: the source is converted as it is, its
input preprocessing included, and the report says so.

Every array already preprocessed with the source's contract is re-expressed for the work
model's contract (exact: both are affine in the pixel value), and the bridged model is checked
against its source on real images before anything else happens to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shoplens.contract import PreprocessContract
from shoplens.errors import ConversionError, UsageError
from shoplens_convert.bridge import (
    FlatGraph,
    InputPrefix,
    bridge_to_tf_keras,
    check_not_normalized_twice,
    find_input_prefix,
    flatten_model,
)
from shoplens_convert.fold import plan_fold, reexpress_inputs
from shoplens_convert.load import LoadedModel

__all__ = ["BRIDGE_TOLERANCE", "Prepared", "SourceGraph", "analyse_source", "prepare_model"]

# largest |output difference| of a bridged model, relative to max(1, largest |output|); the fold's
# 1x1 convolution reorders float arithmetic, so it gets a looser bound
BRIDGE_TOLERANCE = 1e-4
FOLD_TOLERANCE = 1e-3


@dataclass(frozen=True)
class SourceGraph:
    """The source's flat graph (Keras 3 models only) and its input preprocessing, if any."""

    graph: FlatGraph | None
    prefix: InputPrefix | None


@dataclass(frozen=True)
class Prepared:
    model: Any  # the Keras 3 source, or the bridged tf-keras model
    contract: PreprocessContract  # what ``model`` expects
    calibration: np.ndarray | None  # re-expressed for ``contract``
    train: tuple[np.ndarray, np.ndarray] | None
    report: dict[str, Any] = field(default_factory=dict)  # bridge, input_preprocessing, fold blocks


def analyse_source(
    loaded: LoadedModel, contract: PreprocessContract, *, allow_double_normalization: bool = False
) -> SourceGraph:
    """Flatten a Keras 3 source and find its input preprocessing; refuse a double normalization."""
    if loaded.format not in ("keras", "h5"):
        return SourceGraph(None, None)
    graph = flatten_model(loaded.model)
    prefix = find_input_prefix(graph)
    check_not_normalized_twice(contract, prefix, loaded.path.name, allow=allow_double_normalization)
    return SourceGraph(graph, prefix)


def prepare_model(
    loaded: LoadedModel,
    source: SourceGraph,
    contract: PreprocessContract,
    *,
    needs_bridge: bool,
    bake: bool,
    swap_bgr: bool,
    calibration: np.ndarray | None,
    train: tuple[np.ndarray, np.ndarray] | None,
    probe: np.ndarray,
) -> Prepared:
    """Bridge (when pruning, QAT or a fold need it), compose the input prefix, fold, check.

    Args:
      loaded: the source model.
      source: its :func:`analyse_source` result.
      contract: the source's contract (sidecar or ``--contract``).
      needs_bridge: pruning or QAT follows (they need tf-keras).
      bake, swap_bgr: ``--bake-preprocessing`` and ``--bake-bgr``.
      calibration, train: arrays preprocessed with ``contract``.
      probe: a few images preprocessed with ``contract`` (the bridge check runs on them).

    Returns:
      A :class:`Prepared` work model, its contract, the re-expressed arrays and report blocks.

    Raises:
      UsageError: a fold asked of a model that cannot take one.
      ConversionError: the bridged model does not compute what its source computes.
    """
    prefix = source.prefix
    prefix_block: dict[str, Any] | None = None
    if prefix is not None:
        prefix_block = {**prefix.to_dict(), "handling": "kept in the model (no bridge needed)"}
    fold_wanted = bake or contract.per_channel
    if not (needs_bridge or fold_wanted) or loaded.format == "tf_saved_model":
        return Prepared(loaded.model, contract, calibration, train,
                        {"bridge": {"used": False}, "input_preprocessing": prefix_block})  # fmt: skip
    if loaded.format == "saved_model":  # already tf-keras: nothing to bridge
        if fold_wanted:
            raise UsageError("folding normalization into a tf-keras SavedModel is not supported; use .keras")
        return Prepared(loaded.model, contract, calibration, train,
                        {"bridge": {"used": False, "reason": "the source is tf-keras"},
                         "input_preprocessing": prefix_block})  # fmt: skip
    remove = prefix is not None and prefix.composable
    composed = prefix.compose(contract) if remove and prefix is not None else contract
    fold = plan_fold(composed, bake=bake, swap_bgr=swap_bgr)
    bridged = bridge_to_tf_keras(
        loaded.model, input_transform=fold.apply if fold else None, remove_input_prefix=remove,
        graph=source.graph,
    )  # fmt: skip
    work_contract = fold.contract if fold else composed
    x = probe[:4]
    xw = reexpress_inputs(x, contract, work_contract)
    y_src = np.asarray(loaded.model(x, training=False))
    diff = float(np.max(np.abs(y_src - np.asarray(bridged.model(xw, training=False)))))
    scale = max(1.0, float(np.max(np.abs(y_src))))
    tol = FOLD_TOLERANCE if fold else BRIDGE_TOLERANCE
    if not diff <= tol * scale:
        raise ConversionError(
            f"the bridged tf-keras model differs from its Keras 3 source by {diff:.3g} "
            f"(allowed {tol * scale:.3g}) on {len(x)} images; please report this model"
        )
    report: dict[str, Any] = {
        "bridge": {"used": True, "max_output_difference": diff, "images": len(x), **bridged.to_dict()},
        "input_preprocessing": prefix_block,
    }
    if prefix is not None and prefix_block is not None:
        prefix_block["handling"] = (
            "absorbed into the preprocessing contract (TFMOT cannot quantize these layers)"
            if remove else "kept in the model (a negative scale has no contract form)"
        )  # fmt: skip
        prefix_block["contract_after"] = composed.to_dict()
    if fold is not None:
        report["fold"] = {"reason": fold.reason, "max_output_difference": diff}
    cal = reexpress_inputs(calibration, contract, work_contract) if calibration is not None else None
    tr = (reexpress_inputs(train[0], contract, work_contract), train[1]) if train is not None else None
    return Prepared(bridged.model, work_contract, cal, tr, report)
