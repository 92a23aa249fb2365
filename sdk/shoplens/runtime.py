"""Interpreter back ends and delegates, chosen at call time (never at import time).

Back ends, auto-detected in this order: ``ai_edge_litert`` (LiteRT, the default) and
``tflite_runtime`` (devices pinned to it, such as Coral boards). ``tensorflow.lite`` runs only
when asked for by name (``backend="tensorflow"``, development machines): a device never loads
TensorFlow by surprise. Delegates: ``cpu`` (XNNPACK with ``num_threads``) and ``edgetpu``.

CPU kernels (``cpu_kernels``): ``xnnpack`` (the default), ``builtin`` (LiteRT's own kernels, no
default delegate) or ``auto``, which times both on the model at load and keeps the faster. XNNPACK
is faster on most models, but its depthwise convolutions larger than 5x5 are 13-18x slower as int8
on x86 (NASNetMobile int8: 7.0 ms with it, 2.4 ms without; ``benchmarks.depthwise_kernels``).
"""

from __future__ import annotations

import ctypes
import importlib
import platform
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from shoplens.errors import BackendUnavailableError, DelegateUnavailableError, ModelError, UsageError
from shoplens.internal.quiet import quiet_native_stderr
from shoplens.tflite_model import ModelInfo

__all__ = [
    "Backend",
    "CpuKernels",
    "Delegate",
    "InterpreterHandle",
    "detect_backend",
    "edgetpu_library_name",
    "make_interpreter",
]


class Backend(str, Enum):
    AUTO = "auto"
    LITERT = "ai_edge_litert"
    TFLITE_RUNTIME = "tflite_runtime"
    TENSORFLOW = "tensorflow"


class Delegate(str, Enum):
    CPU = "cpu"
    EDGETPU = "edgetpu"


class CpuKernels(str, Enum):
    """The kernels of the ops that run on the CPU: XNNPACK's, LiteRT's own, or the faster of the two."""

    XNNPACK = "xnnpack"
    BUILTIN = "builtin"
    AUTO = "auto"


AUTO_MARGIN = 0.9  # auto leaves XNNPACK only for kernels at least 10 % faster
AUTO_BUDGET_S = 0.5  # auto's timing stops after this long (large models), after 3 invokes each


_MODULES = {
    Backend.LITERT: "ai_edge_litert.interpreter",
    Backend.TFLITE_RUNTIME: "tflite_runtime.interpreter",
    Backend.TENSORFLOW: "tensorflow.lite.python.interpreter",
}
_INSTALL = {
    Backend.LITERT: "pip install ai-edge-litert",
    Backend.TFLITE_RUNTIME: "pip install tflite-runtime 'numpy<2'",
    Backend.TENSORFLOW: "pip install tensorflow",
}
EDGETPU_INSTALL_HINT = (
    "install the Edge TPU runtime: on Debian/Ubuntu add the Coral apt repository, then "
    "'apt-get install libedgetpu1-std' (see docs/edgetpu.md), and plug in the accelerator"
)


def edgetpu_library_name(system: str | None = None) -> str:
    """The Edge TPU delegate library for this OS, looked up when called."""
    system = system or platform.system()
    return {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}.get(
        system, "libedgetpu.so.1"
    )


def _import_backend(backend: Backend) -> tuple[Backend, Any]:
    order = [Backend.LITERT, Backend.TFLITE_RUNTIME] if backend is Backend.AUTO else [backend]
    errors = []
    for b in order:
        try:
            with quiet_native_stderr(b is Backend.TENSORFLOW):  # TensorFlow's import banner
                mod = importlib.import_module(_MODULES[b])
        except ImportError as exc:
            errors.append(f"{b.value}: {exc}")
            continue
        except Exception as exc:  # e.g. tflite-runtime built for numpy 1.x under numpy 2
            errors.append(f"{b.value}: {type(exc).__name__}: {exc}")
            continue
        return b, mod
    if backend is Backend.AUTO:
        raise BackendUnavailableError(
            "no TFLite interpreter is installed; install one with: pip install ai-edge-litert "
            "(or tflite-runtime on Coral boards; backend='tensorflow' uses TensorFlow's own, by name only) "
            f"[{'; '.join(errors)}]"
        )
    raise BackendUnavailableError(
        f"back end {backend.value} is unavailable ({errors[0]}); {_INSTALL[backend]}"
    )


def detect_backend(backend: Backend | str = Backend.AUTO) -> Backend:
    """The interpreter package ``backend`` resolves to here (auto: the first importable one)."""
    return _import_backend(Backend(backend))[0]


@dataclass
class InterpreterHandle:
    interpreter: Any
    backend: Backend
    delegate: Delegate
    fell_back: bool = False
    cpu_kernels: CpuKernels = CpuKernels.XNNPACK
    kernel_ms: dict[str, float] = field(default_factory=dict)  # auto: p50 invoke ms of each


def valid_device(device: str | None) -> str | None:
    if device is None:
        return None
    if device in ("usb", "pci") or device.startswith(("usb:", "pci:")):
        return device
    if device.startswith(":") and device[1:].isdigit():
        return device
    raise UsageError(f"unknown Edge TPU device {device!r}; use 'usb', 'pci', ':N', 'usb:N' or 'pci:N'")


def make_interpreter(
    model: str | Path | bytes,
    info: ModelInfo,
    *,
    backend: Backend | str = Backend.AUTO,
    delegate: Delegate | str = Delegate.CPU,
    num_threads: int = 1,
    device: str | None = None,
    fallback_to_cpu: bool = False,
    cpu_kernels: CpuKernels | str = CpuKernels.XNNPACK,
) -> InterpreterHandle:
    """Create and allocate an interpreter for ``model`` with the requested delegate and CPU kernels."""
    try:
        backend = Backend(backend)
        delegate = Delegate(delegate)
        cpu_kernels = CpuKernels(cpu_kernels)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not isinstance(num_threads, int) or num_threads < 1:
        raise UsageError(f"num_threads must be an int >= 1, got {num_threads!r}")
    device = valid_device(device)
    b, mod = _import_backend(backend)
    Interpreter = mod.Interpreter
    load_delegate = getattr(mod, "load_delegate", None) or getattr(
        getattr(mod, "experimental", None), "load_delegate", None
    )
    kwargs: dict[str, Any] = {"num_threads": num_threads}
    if isinstance(model, (bytes, bytearray)):
        kwargs["model_content"] = bytes(model)
    else:
        kwargs["model_path"] = str(model)
    fell_back = False
    if delegate is Delegate.EDGETPU:
        lib = edgetpu_library_name()
        try:
            if load_delegate is None:
                raise ValueError(f"{b.value} cannot load delegates")
            # load the library ourselves first: a Delegate whose library failed to load is left
            # half-built and its __del__ prints a traceback (AttributeError _library) at exit
            ctypes.CDLL(lib)
            options = {"device": device} if device else {}
            kwargs["experimental_delegates"] = [load_delegate(lib, options)]
        except (ValueError, OSError, RuntimeError) as exc:
            if not fallback_to_cpu:
                raise DelegateUnavailableError(
                    f"Edge TPU delegate {lib} could not be loaded "
                    f"({str(exc).strip() or type(exc).__name__}); "
                    f"{EDGETPU_INSTALL_HINT}; or pass fallback_to_cpu=True (CLI: --fallback-to-cpu)"
                ) from None
            fell_back = True
            delegate = Delegate.CPU
    if delegate is Delegate.CPU and info.has_edgetpu_op:
        raise ModelError(
            "this model was compiled for the Edge TPU (it contains edgetpu-custom-op) "
            "and cannot run on the CPU; "
            "use the CPU model (without _edgetpu) or delegate='edgetpu'"
        )
    if delegate is Delegate.EDGETPU and cpu_kernels is CpuKernels.AUTO:
        cpu_kernels = CpuKernels.XNNPACK  # one Edge TPU cannot hold two interpreters to time
    builtin: Any = getattr(mod, "OpResolverType", None)
    if cpu_kernels is not CpuKernels.XNNPACK and builtin is None:
        raise UsageError(f"{b.value} cannot run without XNNPACK; use cpu_kernels='xnnpack'")

    def build(kernels: CpuKernels) -> Any:
        kw = dict(kwargs)
        if kernels is CpuKernels.BUILTIN:
            kw["experimental_op_resolver_type"] = builtin.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            with quiet_native_stderr():  # LiteRT prints an "XNNPACK delegate created" banner
                interp = Interpreter(**kw)
                interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"the interpreter rejected the model: {first[:300]}") from None
        return interp

    if cpu_kernels is not CpuKernels.AUTO:
        return InterpreterHandle(build(cpu_kernels), b, delegate, fell_back, cpu_kernels)
    candidates = {k: build(k) for k in (CpuKernels.XNNPACK, CpuKernels.BUILTIN)}
    try:
        ms = time_alternating(candidates)
    except (ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"the interpreter could not run the model to time it: {first[:300]}") from None
    chosen = pick_cpu_kernels(ms[CpuKernels.XNNPACK], ms[CpuKernels.BUILTIN])
    return InterpreterHandle(candidates[chosen], b, delegate, fell_back, chosen,
                             {k.value: round(v, 4) for k, v in ms.items()})  # fmt: skip


def pick_cpu_kernels(xnnpack_ms: float, builtin_ms: float) -> CpuKernels:
    """``auto``'s rule: LiteRT's own kernels only when they are at least 10 % faster than XNNPACK."""
    return CpuKernels.BUILTIN if builtin_ms < AUTO_MARGIN * xnnpack_ms else CpuKernels.XNNPACK


def time_alternating(
    interps: dict[Any, Any], *, min_runs: int = 3, max_runs: int = 15, budget_s: float = AUTO_BUDGET_S
) -> dict[Any, float]:
    """p50 invoke ms of each interpreter on zero inputs, taking turns (a noisy machine hits both).

    At least ``min_runs`` each, then more up to ``max_runs`` while under ``budget_s`` seconds
    (``auto``'s short timing; ``benchmarks.depthwise_kernels`` runs the long one).
    """
    import numpy as np

    for it in interps.values():
        for d in it.get_input_details():
            it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
        it.invoke()  # the first invoke prepares the kernels: not timed
    times: dict[Any, list[float]] = {k: [] for k in interps}
    start = time.perf_counter()
    done = 0
    while done < min_runs or (done < max_runs and time.perf_counter() - start < budget_s):
        for k, it in interps.items():
            t0 = time.perf_counter()
            it.invoke()
            times[k].append((time.perf_counter() - t0) * 1e3)
        done += 1
    return {k: float(np.median(v)) for k, v in times.items()}
