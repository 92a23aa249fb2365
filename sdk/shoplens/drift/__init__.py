"""Accuracy drift between a reference model and a candidate, with the likely cause of a mismatch.

The reference is a Keras model (through the converter, which needs TensorFlow) or a ``.tflite``
file; the candidate is a ``.tflite`` file or a *device-outputs* file (the scores a phone or a
kiosk computed for the same images, see docs/drift.md). Every model sees the images through
:class:`shoplens.preprocess.Preprocessor` with its own contract; ``.tflite`` files run in the
SDK's :class:`~shoplens.Classifier`, as on the device.

Evaluation streams in batches: what is kept per image is two class indices and a correctness
bit, so memory stays bounded at 100k+ images. When the candidate disagrees with the reference,
:func:`likely_causes` re-runs the reference with the common on-device mistakes (channel order,
normalization range, resize filter, crop mode) and names the one that reproduces the candidate;
a candidate that collapsed to a near-constant output is named as such.
"""

from shoplens.drift.causes import alternatives, likely_causes
from shoplens.drift.inputs import DEVICE_OUTPUTS_FORMAT, BundleDataset, DeviceOutputs, DriftPlan, plan_drift
from shoplens.drift.models import DriftModel, TFLiteDriftModel, open_model, to_probabilities
from shoplens.drift.paired import PairedMetrics
from shoplens.drift.report import (
    CAUSE_TRIGGER_AGREEMENT,
    CAUSE_TRIGGER_KL,
    CAUSE_TRIGGER_SCORE_DELTA,
    Alternative,
    CauseResult,
    DriftReport,
    paired_bootstrap_ci,
)
from shoplens.drift.run import run_drift

__all__ = [
    "CAUSE_TRIGGER_AGREEMENT",
    "CAUSE_TRIGGER_KL",
    "CAUSE_TRIGGER_SCORE_DELTA",
    "DEVICE_OUTPUTS_FORMAT",
    "Alternative",
    "BundleDataset",
    "CauseResult",
    "DeviceOutputs",
    "DriftModel",
    "DriftPlan",
    "DriftReport",
    "PairedMetrics",
    "TFLiteDriftModel",
    "alternatives",
    "likely_causes",
    "open_model",
    "paired_bootstrap_ci",
    "plan_drift",
    "run_drift",
    "to_probabilities",
]
