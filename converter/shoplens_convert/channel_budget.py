"""Per-layer channel ratios under a compute budget: cut where the model cares least.

A uniform ratio (:func:`shoplens_convert.channels.prune_channels`) takes the same share from every
prunable group. A group's channels are not worth the same everywhere: the first convolution of a
small CNN has few MACs and much influence, a wide late layer the opposite. Here each prunable group
is tried alone at each step ratio (25 %, 50 %, 75 % of its channels, without fine-tuning), and its
**sensitivity** is the mean KL divergence of the pruned model's scores from the dense model's on
calibration images (no labels needed). Then, greedily, the step with the least added divergence per
MAC saved is taken, group by group, until the model's MACs (the latency proxy; the report measures
the converted model's invoke time too) are within ``budget`` x the dense model's. A budget that
even the largest step everywhere cannot meet is a one-line error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from shoplens.drift.paired import kl_rows
from shoplens.errors import UsageError
from shoplens.postprocess import to_probabilities
from shoplens_convert.channels import MULTIPLE, macs, plan_channels, prune_channels

__all__ = ["BudgetPlan", "budget_ratios"]

STEPS = (0.25, 0.5, 0.75)


@dataclass
class BudgetPlan:
    ratios: dict[str, float]  # group (its first producer's name) -> share of its channels removed
    macs_dense: int
    macs_planned: int
    budget: float
    sensitivity: dict[str, dict[str, float]]  # group -> {"0.25": KL, ...}: each group alone

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget_macs_share": self.budget,
            "macs_dense": self.macs_dense,
            "macs_planned": self.macs_planned,
            "planned_share": round(self.macs_planned / max(self.macs_dense, 1), 4),
            "ratios": self.ratios,
            "sensitivity_kl": self.sensitivity,
        }


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    """Mean KL(p || q) over the images (drift's own per-row divergence)."""
    return float(np.mean(kl_rows(p, q)))


def _scores(model: Any, images: np.ndarray) -> np.ndarray:
    """The model's scores on ``images`` as probabilities (the SDK's one logits rule)."""
    out = np.asarray(model.predict(images, batch_size=64, verbose=0), np.float64)
    return to_probabilities(out.reshape(len(images), -1))


def budget_ratios(
    model: Any,
    images: np.ndarray,
    budget: float,
    *,
    steps: tuple[float, ...] = STEPS,
    multiple: int = MULTIPLE,
    keep: tuple[str, ...] = (),
) -> BudgetPlan:
    """Per-group ratios that bring ``model``'s MACs within ``budget`` x its own with the least
    change of its scores on ``images`` (preprocessed model inputs, a few hundred are enough).

    Raises:
      UsageError: ``budget`` outside (0, 1), nothing prunable, or a budget no plan can meet.
    """
    if not 0.0 < budget < 1.0:
        raise UsageError(
            f"--latency-budget must be in (0, 1) (a share of the dense model's MACs), got {budget}"
        )
    dense_macs = macs(model)
    top = plan_channels(model, max(steps), multiple=multiple, keep=keep)
    groups = [names[0] for g, names in sorted(top.producers.items()) if g in top.keep]
    if not groups:
        raise UsageError("channel pruning: no layer of this model can lose channels")
    floor = macs(
        prune_channels(
            model, 0.0, multiple=multiple, keep=keep, ratios=dict.fromkeys(groups, max(steps))
        ).model
    )
    if floor > budget * dense_macs:
        raise UsageError(
            f"--latency-budget {budget:g} cannot be met: removing {100 * max(steps):.0f} % of the channels "
            f"of every prunable group leaves {100 * floor / dense_macs:.1f} % of the MACs"
        )
    ref = _scores(model, images)
    sens: dict[str, dict[float, float]] = {}
    saved: dict[str, dict[float, int]] = {}
    for name in groups:
        sens[name], saved[name] = {0.0: 0.0}, {0.0: 0}
        for s in steps:
            slim = prune_channels(model, 0.0, multiple=multiple, keep=keep, ratios={name: s}).model
            sens[name][s] = _kl(ref, _scores(slim, images))
            saved[name][s] = dense_macs - macs(slim)
    chosen = dict.fromkeys(groups, 0.0)
    planned = dense_macs
    while planned > budget * dense_macs:
        best, best_cost = None, np.inf
        for name in groups:
            later = [s for s in steps if s > chosen[name]]
            if not later:
                continue
            nxt = later[0]
            gain = saved[name][nxt] - saved[name][chosen[name]]
            cost = (sens[name][nxt] - sens[name][chosen[name]]) / max(gain, 1)
            if gain > 0 and cost < best_cost:
                best, best_cost = (name, nxt), cost
        if best is None:  # pragma: no cover - the floor check above rules this out
            break
        chosen[best[0]] = best[1]
        ratios = {n: r for n, r in chosen.items() if r > 0}
        planned = macs(prune_channels(model, 0.0, multiple=multiple, keep=keep, ratios=ratios).model)
    return BudgetPlan(
        ratios={n: r for n, r in chosen.items() if r > 0},
        macs_dense=dense_macs,
        macs_planned=planned,
        budget=budget,
        sensitivity={n: {f"{s:g}": round(v, 5) for s, v in d.items() if s > 0} for n, d in sens.items()},
    )
