"""What the Edge TPU maps: the documented supported-operations table, and the op versions the
frozen compiler (v16) can parse.

Sources (see docs/edgetpu.md for the discussion):

* the "Supported operations" table of coral.ai/docs/edgetpu/models-intro (operation names and
  their *known limitations*, quoted in ``LIMITS``), and its general requirements: tensors
  8-bit quantized, constant sizes, at most 3 non-trivial (innermost) dimensions, one partition;
* the op versions: the compiler embeds a TFLite op registry from before TensorFlow 2.7, and fails
  to *parse* a model with a newer op version ("Didn't find op for builtin opcode 'QUANTIZE'
  version '3'", google-coral/edgetpu#879; CONV_2D v6 #631; TRANSPOSE_CONV v4 #845). The newest
  version of each op that TensorFlow 2.5 registered (TFLite's ``runtime_version.cc``) is taken
  as the accepted maximum; versions introduced in 2.6 are reported as "too new" too, because
  the exact snapshot is not published.
"""

from __future__ import annotations

# TFLite builtin name -> the Edge TPU table's limitation text ("" = none documented).
LIMITS: dict[str, str] = {
    "ADD": "",
    "AVERAGE_POOL_2D": "No fused activation function.",
    "CONCATENATION": (
        "No fused activation function. If any input is a compile-time constant tensor, there must be "
        "only 2 inputs, and this constant tensor must be all zeroes (effectively, a zero-padding op)."
    ),
    "CONV_2D": "Must use the same dilation in x and y dimensions.",
    "DEPTHWISE_CONV_2D": "Must use the same dilation in x and y dimensions.",
    "EXPAND_DIMS": "",
    "FULLY_CONNECTED": (
        "Only the default format is supported for fully-connected weights. Output tensor is one-dimensional."
    ),
    "L2_NORMALIZATION": "",
    "LOGISTIC": "",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "Unidirectional LSTM only.",
    "MAXIMUM": "",
    "MAX_POOL_2D": "No fused activation function.",
    "MEAN": "No reduction in batch dimension. If a z-reduction, the z-dimension must be multiple of 4.",
    "MINIMUM": "",
    "MUL": "",
    "PACK": "No packing in batch dimension.",
    "PAD": "No padding in batch dimension.",
    "PRELU": "Alpha must be 1-dimensional (only the innermost dimension can be >1 size).",
    "QUANTIZE": "",
    "REDUCE_MAX": "Cannot operate on the batch dimension.",
    "REDUCE_MIN": "Cannot operate on the batch dimension.",
    "RELU": "",
    "RELU6": "",
    "RELU_N1_TO_1": "",
    "RESHAPE": "Certain reshapes might not be mapped for large tensor sizes.",
    "RESIZE_BILINEAR": (
        "Input/output is a 3-dimensional tensor. Depending on input/output size, this operation may not "
        "be mapped to the Edge TPU to avoid loss in precision."
    ),
    "RESIZE_NEAREST_NEIGHBOR": (
        "Input/output is a 3-dimensional tensor. Depending on input/output size, this operation may not "
        "be mapped to the Edge TPU to avoid loss in precision."
    ),
    "SLICE": "",
    "SOFTMAX": "Supports only 1-D input tensor with a max of 16,000 elements.",
    "SPACE_TO_DEPTH": "",
    "SPLIT": "No splitting in batch dimension.",
    "SQUEEZE": "",
    "STRIDED_SLICE": (
        "Supported only when all strides are equal to 1 (that is, effectively a Stride op), and with "
        "ellipsis-axis-mask == 0, and new-axis-max == 0."
    ),
    "SUB": "",
    "SUM": "No reduction in batch dimension. If a z-reduction, the z-dimension must be multiple of 4.",
    "TANH": "",
    "TRANSPOSE_CONV": "",
}

# Newest op version registered by TensorFlow 2.5 (TFLite runtime_version.cc), for the ops above.
MAX_VERSION: dict[str, int] = {
    "ADD": 3,
    "AVERAGE_POOL_2D": 3,
    "CONCATENATION": 3,
    "CONV_2D": 5,
    "DEPTHWISE_CONV_2D": 6,
    "EXPAND_DIMS": 1,
    "FULLY_CONNECTED": 9,
    "L2_NORMALIZATION": 2,
    "LOGISTIC": 3,
    "UNIDIRECTIONAL_SEQUENCE_LSTM": 3,
    "MAXIMUM": 4,
    "MAX_POOL_2D": 3,
    "MEAN": 3,
    "MINIMUM": 4,
    "MUL": 4,
    "PACK": 3,
    "PAD": 3,
    "PRELU": 1,
    "QUANTIZE": 2,
    "REDUCE_MAX": 3,
    "REDUCE_MIN": 3,
    "RELU": 3,
    "RELU6": 3,
    "RELU_N1_TO_1": 1,
    "RESHAPE": 1,
    "RESIZE_BILINEAR": 4,
    "RESIZE_NEAREST_NEIGHBOR": 4,
    "SLICE": 5,
    "SOFTMAX": 3,
    "SPACE_TO_DEPTH": 2,
    "SPLIT": 4,
    "SQUEEZE": 2,
    "STRIDED_SLICE": 5,
    "SUB": 5,
    "SUM": 2,
    "TANH": 3,
    "TRANSPOSE_CONV": 3,
}

# Documented compiler failures for versions past these, for the report.
KNOWN_REJECTIONS = {
    ("QUANTIZE", 3): "google-coral/edgetpu#879",
    # version 6 is a grouped convolution; where groups equal the channels it is a depthwise one
    ("CONV_2D", 6): "google-coral/edgetpu#631; a grouped convolution, Keras Conv2D(groups=...): "
    "with groups equal to the channels, DepthwiseConv2D computes the same and maps",
    ("TRANSPOSE_CONV", 4): "google-coral/edgetpu#845",
}

FUSED_ACTIVATIONS = {0: "none", 1: "relu", 2: "relu_n1_to_1", 3: "relu6", 4: "tanh", 5: "sign_bit"}
