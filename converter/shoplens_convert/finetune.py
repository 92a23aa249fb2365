"""Fine-tune a tf-keras model (after pruning or QAT wrapping) with a rich progress bar."""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from shoplens.errors import UsageError
from shoplens.internal.progress import progress
from shoplens_convert._tf import tf_keras

__all__ = ["FineTuneOptions", "FineTuneResult", "array_batches", "fine_tune", "freeze_batchnorm",
           "mean_over_batches", "recalibrate_batchnorm"]


@dataclass(frozen=True)
class FineTuneOptions:
    epochs: int = 2
    batch_size: int = 64
    learning_rate: float = 2e-4
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.epochs <= 1000:
            raise UsageError(f"fine-tuning epochs must be in 1..1000, got {self.epochs}")
        if not 1 <= self.batch_size <= 4096:
            raise UsageError(f"fine-tuning batch size must be in 1..4096, got {self.batch_size}")
        if not 0 < self.learning_rate < 1:
            raise UsageError(f"learning rate must be in (0, 1), got {self.learning_rate}")

    def steps(self, n: int) -> int:
        return self.epochs * max(1, -(-n // self.batch_size))


@dataclass
class FineTuneResult:
    epochs: int
    images: int
    seconds: float
    final_loss: float
    final_accuracy: float


def freeze_batchnorm(model: Any) -> int:
    """Keep BatchNorm layers in inference mode with fixed statistics during fine-tuning.

    QAT uses this (the usual practice for a short QAT run). Pruning does not by default: there the
    conv outputs change and BatchNorm must follow them (see PruneOptions). Returns how many layers
    were frozen.
    """
    n = 0
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            layer.trainable = False
            n += 1
    return n


def recalibrate_batchnorm(model: Any, x: np.ndarray, *, images: int = 1024, batch_size: int = 64) -> int:
    """Set every BatchNormalization's moving statistics to the exact mean over ``images`` of ``x``.

    Fine-tuning moves the moving averages by 1 % a step (momentum 0.99), so after a short pruning
    run they still describe the dense model, before half its weights were zeroed; in inference mode
    the pruned model then answers from stale statistics (measured on MobileNet at half width, 50 %
    sparsity, two epochs on 2,048 images: top-1 agreement with the source 0.27 without this, 0.60
    with it). One forward pass in training mode per batch, with momentum k/(k+1) at batch k, makes
    the moving statistics the average over the batches; no weight is trained. Returns how many
    layers were recalibrated (at any depth).
    """
    tfk = tf_keras()
    every = model._flatten_layers(include_self=False, recursive=True)  # nested models and wrappers too
    layers = [ly for ly in every if isinstance(ly, tfk.layers.BatchNormalization)]
    if not layers or not len(x):
        return 0
    saved = [ly.momentum for ly in layers]

    def set_momentum(decay: float) -> None:
        for ly in layers:
            ly.momentum = decay

    try:
        mean_over_batches(model, x, set_momentum, images=images, batch_size=batch_size)
    finally:
        for ly, mom in zip(layers, saved, strict=True):
            ly.momentum = mom
    return len(layers)


def mean_over_batches(
    model: Any, x: np.ndarray, set_decay: Callable[[float], None], *, images: int, batch_size: int
) -> int:
    """Forward passes in training mode over ``images`` of ``x``, with ``set_decay(k / (k + 1))``
    before batch k: a moving average updated with that decay holds the plain mean over the batches
    (BatchNorm statistics, QAT's activation ranges). No weight is trained. Returns the batch count.
    """
    batches = 0
    for k, start in enumerate(range(0, min(images, len(x)), batch_size)):
        set_decay(k / (k + 1))
        model(x[start : start + batch_size], training=True)
        batches += 1
    return batches


def array_batches(base: type, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int) -> Any:
    """Shuffled batches sliced from the arrays, as an instance of ``base`` (tf-keras's
    ``utils.Sequence`` or Keras 3's ``utils.PyDataset``): ``fit()`` on the arrays themselves first
    copies the whole training set into a tensor (58,000 images at 96x96x3: 6.4 GB more, per fit).
    Each epoch sees every image once, in a new order drawn from ``seed``.

    Use it as a context manager: on leaving, the batches drop the arrays. tf-keras's ``fit()`` keeps
    the Sequence alive after it returns (its generator adapter stays referenced), and with the arrays
    that pinned the whole training set for the life of the process: 700 MB per ``convert()`` at
    5,000 images, 6 GB per recipe at 58,000, until ``make bench`` ran out of memory.
    """
    if len(x) != len(y) or not len(x):
        raise UsageError(f"training arrays must be non-empty and of one length, got {len(x)} and {len(y)}")
    steps = -(-len(x) // batch_size)

    class _Batches(base):  # type: ignore[misc]
        def __init__(self, x: np.ndarray, y: np.ndarray) -> None:  # arguments: no closure over the arrays
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(len(x))
            self.x: np.ndarray | None = x
            self.y: np.ndarray | None = y

        def __len__(self) -> int:
            return steps

        def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
            if self.x is None or self.y is None:
                raise RuntimeError("these batches were released")
            idx = np.sort(self.order[i * batch_size : (i + 1) * batch_size])
            return self.x[idx], self.y[idx]

        def on_epoch_end(self) -> None:
            self.rng.shuffle(self.order)

        def __enter__(self) -> Any:
            return self

        def __exit__(self, *exc: object) -> None:
            self.x = self.y = None

    return _Batches(x, y)


def fine_tune(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    options: FineTuneOptions,
    *,
    output: str,
    callbacks: list[Any] | None = None,
    what: str = "fine-tuning",
    show_progress: bool = False,
) -> FineTuneResult:
    """Train ``model`` (tf-keras) on preprocessed (x, y); ``output`` is 'probabilities' or 'logits'.

    ``y`` holds class indices (shape (n,)), or scores to imitate (shape (n, classes), each row a
    probability distribution: a teacher's softmax), which selects the categorical cross-entropy.
    """
    tfk = tf_keras()
    soft = np.ndim(y) == 2
    kind = tfk.losses.CategoricalCrossentropy if soft else tfk.losses.SparseCategoricalCrossentropy
    loss = kind(from_logits=output == "logits")
    metric = "categorical_accuracy" if soft else "accuracy"
    model.compile(optimizer=tfk.optimizers.Adam(options.learning_rate), loss=loss, metrics=[metric])
    steps = options.steps(len(x))
    bar = progress(show_progress, what, steps)

    class _Bar(tfk.callbacks.Callback):  # type: ignore[misc, name-defined]
        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            bar.advance()

    t0 = time.perf_counter()
    tfk.utils.set_random_seed(options.seed)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            callbacks = [*(callbacks or []), _Bar()]
            with array_batches(tfk.utils.Sequence, x, y, options.batch_size, options.seed) as batches:
                hist = model.fit(batches, epochs=options.epochs, verbose=0, callbacks=callbacks)
    finally:
        bar.close()
    h = hist.history
    return FineTuneResult(
        options.epochs,
        len(x),
        round(time.perf_counter() - t0, 1),
        float(h["loss"][-1]),
        float(h.get(metric, [float("nan")])[-1]),
    )
