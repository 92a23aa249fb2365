"""The model zoo's architectures: each Keras Applications family, stock and reduced (``MINI``), with
the preprocessing contract its ``preprocess_input`` implies."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["ARCHS", "CLASSES", "MINI", "SIZE", "Arch", "contract_for"]

SIZE = 32
CLASSES = 10


# -- architectures and the contract each family's preprocess_input implies --------------------
def contract_for(kind: str) -> dict[str, Any]:
    base = {"version": 1, "size": [SIZE, SIZE], "channels": 3, "interpolation": "linear", "crop": "center"}
    if kind == "tf":  # [-1, 1]
        return {**base, "color_order": "RGB", "mean": [127.5] * 3, "std": [127.5] * 3}
    if kind == "caffe":  # BGR, ImageNet mean subtracted, no scaling
        return {**base, "color_order": "BGR", "mean": [103.939, 116.779, 123.68], "std": [1.0] * 3}
    if kind == "torch":  # RGB, ImageNet mean and std
        return {
            **base,
            "color_order": "RGB",
            "mean": [123.675, 116.28, 103.53],
            "std": [58.395, 57.12, 57.375],
        }
    return {**base, "color_order": "RGB", "mean": [0.0] * 3, "std": [1.0] * 3}  # raw: the model normalizes


@dataclass(frozen=True)
class Arch:
    name: str
    contract: str  # tf | caffe | torch | raw
    build: Callable[[bool], Any]  # include_top -> Keras 3 model (random weights)
    kinds: str  # the layer kinds it brings, for the CI slice


def _app(name: str, **kw: Any) -> Callable[[bool], Any]:
    def build(top: bool) -> Any:
        import keras

        fn = getattr(keras.applications, name)
        extra = {"classes": CLASSES} if top else {}
        return fn(weights=None, input_shape=(SIZE, SIZE, 3), include_top=top, **kw, **extra)

    return build


def _mini(family: str) -> Callable[[bool], Any]:
    """The family's own Keras Applications builder at reduced depth and width."""

    def build(top: bool) -> Any:
        from keras.src.applications import convnext, densenet, efficientnet, mobilenet_v3, nasnet, resnet

        common = {"weights": None, "input_shape": (SIZE, SIZE, 3), "include_top": top}
        if top:
            common["classes"] = CLASSES
        if family == "MobileNetV3Small":
            import keras

            return keras.applications.MobileNetV3Small(alpha=0.75, **common)
        if family == "EfficientNetB0":
            blocks = [b for b in efficientnet.DEFAULT_BLOCKS_ARGS[:3]]
            return efficientnet.EfficientNet(
                0.25, 0.5, SIZE, blocks_args=blocks, name="efficientnet_mini", **common
            )
        if family == "ConvNeXtTiny":
            return convnext.ConvNeXt(
                [1, 1, 1, 1],
                [16, 32, 48, 64],
                drop_path_rate=0.1,
                default_size=SIZE,
                name="convnext_mini",
                **common,
            )
        if family == "DenseNet121":
            return densenet.DenseNet([1, 2, 2, 1], name="densenet_mini", **common)
        if family == "ResNet50V2":

            def stack(x: Any) -> Any:
                x = resnet.stack_residual_blocks_v2(x, 16, 2, name="conv2")  # 1 block would repeat a name
                return resnet.stack_residual_blocks_v2(x, 32, 2, stride1=1, name="conv3")

            return resnet.ResNet(stack, True, True, name="resnet_v2_mini", **common)
        if family == "NASNetMobile":
            kw = {k: v for k, v in common.items() if k != "input_shape"}
            return nasnet.NASNet(
                (SIZE, SIZE, 3),
                penultimate_filters=96,
                num_blocks=1,
                stem_block_filters=8,
                name="nasnet_mini",
                **kw,
            )
        if family == "MobileNet":
            import keras

            return keras.applications.MobileNet(alpha=0.5, **common)
        raise KeyError(family)
        del mobilenet_v3  # pragma: no cover

    return build


ARCHS = {
    a.name: a
    for a in (
        Arch("MobileNet", "tf", _app("MobileNet"), "ReLU(6), DepthwiseConv2D, Reshape head"),
        Arch("MobileNetV2", "tf", _app("MobileNetV2"), "inverted residual Add, ReLU(6)"),
        Arch(
            "MobileNetV3Small", "raw", _app("MobileNetV3Small"), "hard_silu, ops x+3 and x*1/6, SE Multiply"
        ),
        Arch("MobileNetV3Large", "raw", _app("MobileNetV3Large"), "hard_silu, ops, SE Multiply"),
        Arch("EfficientNetB0", "raw", _app("EfficientNetB0"), "silu, Rescaling + Normalization, SE Reshape"),
        Arch("EfficientNetV2B0", "raw", _app("EfficientNetV2B0"), "silu, per-channel Normalization"),
        Arch("ResNet50", "caffe", _app("ResNet50"), "BGR per-channel mean (fold), residual Add"),
        Arch("ResNet50V2", "tf", _app("ResNet50V2"), "pre-activation BatchNormalization"),
        Arch(
            "DenseNet121",
            "torch",
            _app("DenseNet121"),
            "BatchNormalization after Concatenate, AveragePooling2D",
        ),
        Arch("NASNetMobile", "tf", _app("NASNetMobile"), "SeparableConv2D, Cropping2D, Concatenate"),
        Arch(
            "ConvNeXtTiny", "raw", _app("ConvNeXtTiny"), "nested models, LayerNormalization, LayerScale, gelu"
        ),
    )
}
MINI = {
    name: Arch(name, a.contract, _mini(name), a.kinds)
    for name, a in ARCHS.items()
    if name
    in (
        "MobileNet",
        "MobileNetV3Small",
        "EfficientNetB0",
        "ConvNeXtTiny",
        "DenseNet121",
        "ResNet50V2",
        "NASNetMobile",
    )
}
