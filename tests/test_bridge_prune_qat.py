"""Keras 3 -> tf-keras bridge, TFMOT pruning and QAT on small real models."""

from __future__ import annotations

import numpy as np
import pytest

from shoplens.contract import PreprocessContract
from shoplens.data.spec import open_dataset
from shoplens.errors import UsageError
from shoplens_convert.bridge import bridge_to_tf_keras, max_output_difference
from shoplens_convert.finetune import FineTuneOptions
from shoplens_convert.fold import plan_fold
from shoplens_convert.frames import preprocessed_arrays
from shoplens_convert.load import load_keras_model
from shoplens_convert.prune import PruneOptions, prune_model
from shoplens_convert.qat import quantization_aware_train
from shoplens_convert.quantize import quantize
from shoplens_convert.tflite_stats import weight_sparsity


def _data(path, n: int = 600):
    c = PreprocessContract.load(path.parent / "contract.json")
    return c, preprocessed_arrays(open_dataset(f"fashion-mnist:train:{n}"), c)


@pytest.mark.parametrize("fixture", ["block_model", "tiny_keras_model", "per_channel_model"])
def test_bridge_reproduces_the_keras3_outputs(fixture, request) -> None:
    path = request.getfixturevalue(fixture)
    src = load_keras_model(path).model
    _c, (x, _) = _data(path, 64)
    bridged = bridge_to_tf_keras(src).model
    assert type(bridged).__module__.startswith("tf_keras")
    assert [w.shape for w in bridged.get_weights()] == [w.shape for w in src.get_weights()]
    assert max_output_difference(src, bridged, x) < 1e-5
    # and the bridged model converts to a TFLite model that agrees as well
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=quantize(bridged, "float32"))
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    it.set_tensor(i["index"], x[:1])
    it.invoke()
    assert np.max(np.abs(it.get_tensor(o["index"]) - np.asarray(src(x[:1])))) < 1e-4


def test_fold_is_exact_and_swaps_channels(per_channel_model) -> None:
    src = load_keras_model(per_channel_model).model
    c, (x, _) = _data(per_channel_model, 32)
    fold = plan_fold(c, bake=True, swap_bgr=True)
    assert (
        fold is not None
        and fold.contract.color_order.value == "BGR"
        and fold.contract.value_range == (0.0, 255.0)
    )
    folded = bridge_to_tf_keras(src, input_transform=fold.apply).model
    pixels_rgb = x * np.asarray(c.std, np.float32) + np.asarray(c.mean, np.float32)
    raw_bgr = np.ascontiguousarray(pixels_rgb[..., ::-1])
    assert np.max(np.abs(np.asarray(src(x)) - np.asarray(folded(raw_bgr)))) < 1e-4
    assert plan_fold(PreprocessContract(32, 32), bake=False) is None  # scalar contract: nothing to fold
    with pytest.raises(UsageError, match="bake-bgr"):
        plan_fold(c, bake=False, swap_bgr=True)


def test_prune_reaches_sparsity_and_keeps_accuracy(block_model) -> None:
    src = load_keras_model(block_model).model
    _c, (x, y) = _data(block_model, 1500)
    opts = PruneOptions(0.6, FineTuneOptions(epochs=2, learning_rate=1e-3))
    result = prune_model(bridge_to_tf_keras(src).model, x, y, opts, output="probabilities")
    assert result.sparsity["stem"] == pytest.approx(0.6, abs=0.02)
    assert result.sparsity["head"] == pytest.approx(0.6, abs=0.02)
    assert result.sparsity["dw"] == 0.0 and "dw" in result.left_dense
    assert "DepthwiseConv2D" in result.left_dense["dw"]
    # stripped: plain layers again, and sparsity survives int8 conversion
    assert not any("PruneLowMagnitude" in type(layer).__name__ for layer in result.model.layers)
    tfl = quantize(result.model, "int8", calibration=x[:100])
    ws = weight_sparsity(tfl)
    conv = [v for k, v in ws.items() if v["op"] == "CONV_2D" and v["weights"] >= 432]
    assert conv and all(v["sparsity"] >= 0.55 for v in conv)
    acc_src = np.mean(np.argmax(np.asarray(src(x[:500])), 1) == y[:500])
    acc_pruned = np.mean(np.argmax(np.asarray(result.model(x[:500])), 1) == y[:500])
    assert acc_pruned > acc_src - 0.08
    assert result.batchnorm_recalibrated == 3  # its statistics re-measured on the pruned model


def test_recalibrated_batchnorm_holds_the_mean_of_what_it_sees() -> None:
    import tf_keras as tfk

    from shoplens_convert.finetune import recalibrate_batchnorm

    x = np.random.default_rng(0).normal(2.0, 3.0, (300, 8, 8, 3)).astype(np.float32)
    inp = tfk.Input((8, 8, 3))
    conv = tfk.layers.Conv2D(4, 3)
    bn = tfk.layers.BatchNormalization(momentum=0.99)
    model = tfk.Model(inp, bn(conv(inp)))
    before = bn.moving_mean.numpy().copy()
    assert recalibrate_batchnorm(model, x, images=256, batch_size=64) == 1
    seen = tfk.Model(inp, conv.output).predict(x[:256], verbose=0).reshape(-1, 4)
    np.testing.assert_allclose(bn.moving_mean.numpy(), seen.mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(bn.moving_variance.numpy(), seen.var(0), rtol=2e-2)
    assert not np.allclose(before, bn.moving_mean.numpy())
    assert bn.momentum == 0.99  # restored


def test_qat_ranges_start_at_what_the_model_sees_not_at_tfmot_s_six() -> None:
    """TFMOT starts every moving-average range at [-6, 6] and moves it 0.1 % a step; activations
    of a few hundred (a model fed BGR-minus-mean pixels) were clipped through a short QAT run."""
    import tf_keras as tfk

    from shoplens_convert._tf import tfmot
    from shoplens_convert.qat import calibrate_ranges

    x = np.random.default_rng(0).uniform(-150, 150, (256, 8, 8, 3)).astype(np.float32)
    inp = tfk.Input((8, 8, 3))
    conv = tfk.layers.Conv2D(4, 3, activation="relu")
    model = tfk.Model(inp, tfk.layers.Dense(10)(tfk.layers.Flatten()(conv(inp))))
    qat = tfmot().quantization.keras.quantize_model(model)
    ranges = {v.name.split("/")[-1][:-2]: v for v in qat.get_layer(f"quant_{conv.name}").weights}
    assert float(ranges["post_activation_max"].numpy()) == 6.0  # TFMOT's start
    assert calibrate_ranges(qat, x, images=256, batch_size=64) == 4
    seen = tfk.Model(inp, conv.output).predict(x, verbose=0).reshape(4, -1).max(1)  # per batch of 64
    calibrated = float(ranges["post_activation_max"].numpy())
    np.testing.assert_allclose(calibrated, seen.mean(), rtol=0.05)  # the QAT model's inputs are int8
    assert calibrated > 100
    qat(x[:64], training=True)  # afterwards TFMOT's own decay (0.999) again: the range barely moves
    np.testing.assert_allclose(float(ranges["post_activation_max"].numpy()), calibrated, rtol=0.01)


def test_pqat_preserves_sparsity_qat_does_not(block_model) -> None:
    src = load_keras_model(block_model).model
    _c, (x, y) = _data(block_model, 1000)
    pruned = prune_model(bridge_to_tf_keras(src).model, x, y, PruneOptions(0.5, FineTuneOptions(epochs=1)),
                         output="probabilities").model  # fmt: skip
    ft = FineTuneOptions(epochs=1, learning_rate=1e-3)
    pqat = quantization_aware_train(pruned, x, y, ft, output="probabilities", preserve_sparsity=True)
    qat = quantization_aware_train(pruned, x, y, ft, output="probabilities", preserve_sparsity=False)
    s_pqat = weight_sparsity(quantize(pqat.model, "int8", calibration=x[:100]))
    s_qat = weight_sparsity(quantize(qat.model, "int8", calibration=x[:100]))
    head = next(k for k in s_pqat if "head" in k)
    assert s_pqat[head]["sparsity"] >= 0.48  # zeros kept through QAT and int8
    assert s_qat[head]["sparsity"] < 0.2  # plain QAT at a high learning rate refills them


def test_qat_learns_the_float_model_s_own_probabilities_by_default() -> None:
    import tf_keras as tfk

    from shoplens_convert.qat import teacher_scores

    x = np.random.default_rng(1).normal(0, 1, (300, 8)).astype(np.float32)
    inp = tfk.Input((8,))
    logits = tfk.Model(inp, tfk.layers.Dense(5)(inp))
    probs = tfk.Model(inp, tfk.layers.Activation("softmax")(logits.output))
    for model, output in ((logits, "logits"), (probs, "probabilities")):
        t = teacher_scores(model, x, output=output)
        assert t.shape == (300, 5) and t.dtype == np.float32
        np.testing.assert_allclose(t, probs.predict(x, verbose=0), atol=1e-6)  # a softmax, either way
    with pytest.raises(UsageError, match="source, labels"):
        quantization_aware_train(probs, x, np.zeros(300), FineTuneOptions(epochs=1), output="probabilities",
                                 targets="teacher")  # fmt: skip


def test_option_validation() -> None:
    with pytest.raises(UsageError, match="between 0 and 1"):
        PruneOptions(1.0)
    with pytest.raises(UsageError, match="between 0 and 1"):
        PruneOptions(0.0)
    with pytest.raises(UsageError, match="epochs"):
        FineTuneOptions(epochs=0)


def test_fine_tune_targets_and_ranges_are_checked_up_front() -> None:
    from shoplens_convert.options import ConvertOptions

    assert ConvertOptions().prune_targets == "source" and ConvertOptions().ranges == "minmax"
    with pytest.raises(UsageError, match="--prune-targets must be source or labels"):
        ConvertOptions(prune_targets="teacher")
    with pytest.raises(UsageError, match="--ranges must be minmax or mse"):
        ConvertOptions(ranges="percentile")


def test_fine_tuning_batches_are_slices_of_the_arrays_each_image_once_an_epoch() -> None:
    """fit() reads batches sliced from the arrays (no tensor copy of the whole training set)."""
    from shoplens_convert._tf import tf_keras
    from shoplens_convert.finetune import array_batches

    x = np.arange(10, dtype=np.float32).reshape(10, 1) * np.ones((1, 3), np.float32)
    y = np.arange(10)
    b = array_batches(tf_keras().utils.Sequence, x, y, 4, seed=0)
    assert len(b) == 3

    def epoch() -> list[int]:
        seen = [int(v) for i in range(len(b)) for v in b[i][1]]
        assert all((b[i][0][:, 0] == b[i][1]).all() for i in range(len(b)))  # images stay with labels
        return seen

    first = epoch()
    b.on_epoch_end()
    second = epoch()
    assert sorted(first) == sorted(second) == list(range(10)) and first != second
    with pytest.raises(UsageError, match="non-empty and of one length"):
        array_batches(tf_keras().utils.Sequence, x, y[:5], 4, seed=0)
    with b:
        pass
    with pytest.raises(RuntimeError, match="released"):
        b[0]


def test_fine_tuning_lets_go_of_the_training_set() -> None:
    """tf-keras's fit() keeps its Sequence alive afterwards; the arrays must not stay with it (a
    convert() leaked its whole preprocessed training set, 6 GB a recipe in make bench)."""
    import gc
    import weakref

    from shoplens_convert._tf import tf_keras
    from shoplens_convert.finetune import FineTuneOptions, fine_tune

    tfk = tf_keras()
    model = tfk.Sequential([tfk.layers.Input((8, 8, 1)), tfk.layers.Flatten(), tfk.layers.Dense(3)])
    x = np.random.default_rng(0).random((40, 8, 8, 1), dtype=np.float32)
    y = np.arange(40) % 3
    gone = weakref.ref(x)
    fine_tune(model, x, y, FineTuneOptions(epochs=1, batch_size=16), output="logits")
    del x
    gc.collect()
    assert gone() is None
