"""The Edge TPU target: pre-flight mapping report and the compiler integration (no TensorFlow)."""

from shoplens.edgetpu.compiler import CompileResult, compile_for_edgetpu, find_compiler, parse_log
from shoplens.edgetpu.preflight import OpVerdict, Preflight, preflight

__all__ = [
    "CompileResult",
    "OpVerdict",
    "Preflight",
    "compile_for_edgetpu",
    "find_compiler",
    "parse_log",
    "preflight",
]
