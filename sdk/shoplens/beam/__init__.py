"""Catalog scale on Apache Beam: drift over a whole catalog and index builds (``shoplens[beam]``).

Imported only here: ``import shoplens`` never loads Beam (a test proves it), and a worker needs
only the runtime install plus this extra, never TensorFlow.

* :class:`LiteRTModelHandler`: a ``.tflite`` as a RunInference model handler (keyed or not);
* :func:`run_catalog_drift`: ``shoplens drift --runner ...``; :class:`PairedMetricsCombineFn` is
  the drift metrics' accumulator as a ``CombineFn``;
* :func:`build_index_on_beam`: ``shoplens index build --runner ...``.

See docs/scale.md for running the same pipelines on Flink, Spark and Dataflow.
"""

from __future__ import annotations

import logging as _logging

_root = _logging.getLogger()
_level = _root.level
_root.setLevel(_logging.ERROR)  # Beam logs warnings about cloud extras it does not find, at import
try:
    import apache_beam
    import apache_beam.io.filesystems  # noqa: F401
except ImportError:  # pragma: no cover - the runtime alone
    from shoplens.errors import DependencyError

    raise DependencyError(
        "catalog-scale runs need Apache Beam: pip install 'shoplens[beam]' (a separate environment "
        "from the converter's; see docs/scale.md)"
    ) from None
finally:
    _root.setLevel(_level)

from shoplens.beam.drift import CatalogDrift, PairedMetricsCombineFn, run_catalog_drift  # noqa: E402
from shoplens.beam.handler import LiteRTModelHandler  # noqa: E402
from shoplens.beam.index import build_index_on_beam  # noqa: E402
from shoplens.beam.runners import RUNNERS, pipeline_options  # noqa: E402

__all__ = [
    "RUNNERS",
    "CatalogDrift",
    "LiteRTModelHandler",
    "PairedMetricsCombineFn",
    "build_index_on_beam",
    "pipeline_options",
    "run_catalog_drift",
]
