"""Load and run a model once in a child process, so a model that crashes the TFLite runtime (a
native abort or segfault, which no Python ``except`` can catch) costs a child, not the kiosk.

    python -m shoplens._probe MODEL.tflite [BACKEND]      # exit 0: loaded, allocated and invoked

Used by ``BaseOptions(probe_in_subprocess=True)`` and ``Classifier.create_from_bundle``. The static
checks in :func:`shoplens.tflite_model.read_model_info` catch the malformed files the fuzzer found;
the probe is the second line for what they cannot foresee.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from shoplens.errors import ModelError

__all__ = ["probe_model"]

PROBE_TIMEOUT_S = 120.0


def probe_model(
    model: str | Path | bytes, *, backend: str = "auto", timeout_s: float = PROBE_TIMEOUT_S
) -> None:
    """Raise ModelError unless ``model`` loads, allocates and invokes in a child process."""
    tmp: str | None = None
    if isinstance(model, (bytes, bytearray, memoryview)):
        fd, tmp = tempfile.mkstemp(suffix=".tflite")
        with os.fdopen(fd, "wb") as fh:
            fh.write(bytes(model))
        path = tmp
        name = "model bytes"
    else:
        path = str(model)
        name = path
    try:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        p = subprocess.run([sys.executable, "-m", "shoplens._probe", path, backend], capture_output=True,
                           text=True, timeout=timeout_s, env=env)  # fmt: skip
    except subprocess.TimeoutExpired:
        raise ModelError(f"{name}: the isolated load probe did not finish within {timeout_s:g} s") from None
    finally:
        if tmp is not None:
            os.unlink(tmp)
    if p.returncode < 0:
        sig = signal.Signals(-p.returncode).name
        raise ModelError(
            f"{name} crashed the TFLite runtime in an isolated probe ({sig}); it is corrupt or hostile"
        )
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or ["no message"])[-1]
        raise ModelError(f"{name} failed the isolated load probe: {last}")


def _main(argv: list[str]) -> int:  # runs in the child
    import numpy as np

    from shoplens.runtime import Backend, _import_backend

    _, mod = _import_backend(Backend(argv[1] if len(argv) > 1 else "auto"))
    it = mod.Interpreter(model_path=argv[0], num_threads=1)
    it.allocate_tensors()
    for d in it.get_input_details():
        it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    it.invoke()
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
