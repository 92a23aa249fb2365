"""Which channels to remove: importance criteria measured on the reference model (issue 23).

    .venv/bin/python -m benchmarks.channel_criteria      # about 10 minutes on 2 cores

Each criterion scores the channels of every prunable group; 50 % of them are removed, uniformly,
and the slimmed model is fine-tuned for one epoch on 12,000 training images (the converter's
``fine_tune_keras``); top-1 on the 10,000 test images right after pruning and after that epoch.
Candidates: the L1 norm of the filters (what ``--prune-channels`` uses), the BatchNorm scale
``|gamma| / sqrt(var + eps)`` of the BatchNorm that follows the producer (network slimming), and
random scores (the floor). The criterion is swapped in for the converter's ``_importance`` for the
duration of each row. Writes ``benchmarks/results/channel-criteria-DATE.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks import REF, ROOT
from shoplens.internal.atomic import atomic_write_text


def main() -> dict[str, Any]:
    import keras

    from shoplens.contract import PreprocessContract
    from shoplens.data.datasets import read_labels_file
    from shoplens.data.spec import open_dataset
    from shoplens_convert import channels as ch
    from shoplens_convert.frames import preprocessed_arrays
    from shoplens_convert.load import detect_output_kind

    contract = PreprocessContract.load(REF / "contract.json")
    labels = read_labels_file(REF / "labels.txt")
    xte, yte = preprocessed_arrays(open_dataset("fashion-mnist:test", labels=labels), contract)
    xtr, ytr = preprocessed_arrays(open_dataset("fashion-mnist:train", labels=labels), contract, 12000)
    src = keras.saving.load_model(REF / "product_cnn.keras")
    output, _ = detect_output_kind(src, xte[:8])
    l1 = ch._importance
    rng = np.random.default_rng(0)

    def top1(m: Any) -> float:
        return float(np.mean(np.argmax(m.predict(xte, batch_size=256, verbose=0), 1) == yte))

    def bn_scale(model: Any, names: list[str]) -> np.ndarray:
        total = None
        for name in names:
            bns = [
                layer
                for layer in model.layers
                if type(layer).__name__ == "BatchNormalization" and ch._inbound(layer)[0].name == name
            ]
            if not bns:  # a producer without its own BatchNorm keeps the L1 score
                s = l1(model, [name])
            else:
                bn = bns[0]
                gamma = np.asarray(bn.gamma) if bn.gamma is not None else np.ones(bn.moving_variance.shape)
                s = np.abs(gamma) / np.sqrt(np.asarray(bn.moving_variance) + bn.epsilon)
                s = s / max(float(s.mean()), 1e-12)
            total = s if total is None else total + s
        assert total is not None
        return total

    def random_scores(model: Any, names: list[str]) -> np.ndarray:
        return rng.uniform(size=len(l1(model, names)))

    criteria: dict[str, Callable[[Any, list[str]], np.ndarray]] = {
        "L1 norm of filters": l1,
        "BatchNorm scale |gamma|/sqrt(var+eps)": bn_scale,
        "random": random_scores,
    }
    res: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "ratio": 0.5, "source_top1": top1(src)}
    res["rows"] = []
    try:
        for name, fn in criteria.items():
            ch._importance = fn
            slim = ch.prune_channels(src, 0.5).model
            pruned = top1(slim)
            t0 = time.time()
            ch.fine_tune_keras(slim, xtr, ytr, epochs=1, output=output)
            row = {"criterion": name, "top1_pruned": pruned, "top1_after_1_epoch_12k": top1(slim),
                   "seconds": round(time.time() - t0)}  # fmt: skip
            res["rows"].append(row)
            print(row, flush=True)
    finally:
        ch._importance = l1
    out = ROOT / "benchmarks" / "results" / f"channel-criteria-{res['date']}.json"
    atomic_write_text(out, json.dumps(res, indent=1) + "\n", overwrite=True)
    return res


if __name__ == "__main__":
    main()
