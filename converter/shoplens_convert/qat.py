"""Quantization-aware training with TFMOT: plain QAT, and prune-preserving QAT (PQAT).

QAT inserts fake-quant ops that model int8 rounding during a short fine-tune; PQAT uses TFMOT's
``Default8BitPrunePreserveQuantizeScheme`` so zeros made by pruning stay zero. Both run on
tf-keras models; the result is converted to full int8 by :mod:`shoplens_convert.quantize`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from shoplens.errors import ConversionError
from shoplens_convert._tf import tfmot
from shoplens_convert.finetune import FineTuneOptions, FineTuneResult, fine_tune, freeze_batchnorm

__all__ = ["QatResult", "quantization_aware_train"]


@dataclass
class QatResult:
    model: Any  # tf-keras model with fake-quant wrappers, ready for TFLiteConverter
    training: FineTuneResult
    preserve_sparsity: bool


def quantization_aware_train(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    options: FineTuneOptions,
    *,
    output: str,
    preserve_sparsity: bool = False,
    show_progress: bool = False,
) -> QatResult:
    """Wrap ``model`` (tf-keras) for QAT (or PQAT) and fine-tune it on preprocessed (x, y)."""
    mot = tfmot()
    freeze_batchnorm(model)
    q = mot.quantization.keras
    try:
        if preserve_sparsity:
            annotated = q.quantize_annotate_model(model)
            qat_model = q.quantize_apply(
                annotated, mot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
            )
        else:
            qat_model = q.quantize_model(model)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConversionError(f"QAT: TFMOT cannot quantize this model: {first[:300]}") from None
    result = fine_tune(
        qat_model,
        x,
        y,
        options,
        output=output,
        what="prune-preserving QAT" if preserve_sparsity else "QAT",
        show_progress=show_progress,
    )
    return QatResult(qat_model, result, preserve_sparsity)
