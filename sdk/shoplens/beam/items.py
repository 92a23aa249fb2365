"""What a catalog-scale pipeline reads: catalog items, and their images decoded on the workers.

A catalog is named the way the rest of ShopLens names data, plus what catalogs really are:

* a data spec (``fashion-mnist:test``, an image folder, ``kiosk:DIR``): the driver lists the
  items (ids as ``shoplens drift`` gives them), the workers decode the images;
* a ``products.csv`` (``id,image,category[,price,brand,store,...]``): read with Beam's
  ``ReadFromText``, so the driver never holds the catalog; ``image`` may be any path or URI that
  Beam's ``FileSystems`` opens (``gs://`` and ``s3://`` where those extras are installed);
* ``glob:PATTERN`` (e.g. ``glob:gs://bucket/catalog/*/*.jpg``): matched with Beam's
  ``fileio.MatchFiles``; the class is the parent folder's name.

An item is a plain dict (``id``, ``uri`` or ``array``, ``label``: the class index or -1, and
``slices``: the catalog columns to slice by). :func:`decode` raises on an unreadable, truncated
or non-image file; the pipelines run it under ``with_exception_handling``, so a bad file goes to
a dead-letter output with its id and reason and never stops the pipeline.
"""

from __future__ import annotations

import contextlib
import csv
import io
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from shoplens.data.datasets import ArrayDataset, FolderDataset, KioskDataset, decode_image, folder_label_index
from shoplens.errors import DataError
from shoplens.preprocess import MIN_FRAME_SIDE

__all__ = [
    "CatalogSpec", "ReadCatalog", "WriteLines", "decode", "failure_reason", "open_catalog", "quiet_pipeline",
]  # fmt: skip

NAMESPACE = "shoplens"


class CatalogSpec:
    """A resolved catalog: how to read its items, and the label names they map to."""

    def __init__(self, kind: str, label_names: Sequence[str], *, items: list[dict[str, Any]] | None = None,
                 csv_path: str | None = None, header: list[str] | None = None, pattern: str | None = None,
                 name: str = "") -> None:  # fmt: skip
        self.kind = kind  # "list" | "csv" | "glob"
        self.label_names = tuple(label_names)
        self.items = items or []
        self.csv_path = csv_path
        self.header = header or []
        self.pattern = pattern
        self.name = name

    def __len__(self) -> int:
        return len(self.items)


def open_catalog(spec: str, label_names: Sequence[str], *, slices: Sequence[str] = ()) -> CatalogSpec:
    """Resolve a catalog spec (see the module docstring) against a model's labels.

    Raises:
      DataError: a missing or empty catalog, a CSV without ``id`` and ``image`` columns, a slice
        column the catalog lacks, a video kiosk folder (frames must be files).
    """
    from shoplens.data.spec import open_dataset, parse_data_spec

    if spec.startswith("glob:"):
        pattern = spec[len("glob:") :]
        if not FileSystems.match([pattern])[0].metadata_list:
            raise DataError(f"catalog {spec} matches no files")
        return CatalogSpec("glob", label_names, pattern=pattern, name=spec)
    p = Path(spec)
    if p.suffix.lower() == ".csv":
        if not p.is_file():
            raise DataError(f"catalog {p} does not exist")
        with p.open(newline="", encoding="utf-8") as fh:
            header = next(csv.reader(fh), [])
        missing = [c for c in ("id", "image") if c not in header]
        if missing:
            raise DataError(
                f"catalog {p} lacks the column(s) {', '.join(missing)} (needs id,image[,category,...])"
            )
        absent = [s for s in slices if s not in header]
        if absent:
            raise DataError(
                f"catalog {p} has no column {absent[0]!r} to slice by; it has {', '.join(header)}"
            )
        return CatalogSpec("csv", label_names, csv_path=str(p), header=header, name=str(p))
    ds = open_dataset(spec, labels=label_names)
    items: list[dict[str, Any]] = []
    names = ds.label_names
    absent = [s for s in slices if s != "category"]
    if absent:
        raise DataError(f"{spec} has only the 'category' column to slice by, not {absent[0]!r}")
    if isinstance(ds, ArrayDataset):
        ids = ds.ids()
        for i in range(len(ds)):
            lab = int(ds.labels[i])
            items.append(
                {"id": ids[i], "array": ds.images[i], "label": lab, "slices": {"category": names[lab]}}
            )
    elif isinstance(ds, FolderDataset):
        for path, lab in ds.files:
            items.append({"id": str(path.relative_to(ds.root)), "uri": str(path), "label": lab,
                          "slices": {"category": names[lab]}})  # fmt: skip
    elif isinstance(ds, KioskDataset):
        if any("#" in r["file"] for r in ds.rows):
            raise DataError(
                f"{spec} is a kiosk video; catalog runs read image files (generate frames, not --video)"
            )
        for r in ds.rows:
            lab = int(r["label"])
            items.append({"id": r["index"], "uri": str(ds.root / r["file"]), "label": lab,
                          "slices": {"category": names[lab]}})  # fmt: skip
    else:  # pragma: no cover - every data spec kind is handled above
        raise DataError(f"catalog {spec} ({parse_data_spec(spec).kind}) cannot be read by a pipeline")
    if not items:
        raise DataError(f"catalog {spec} holds no images")
    return CatalogSpec("list", names, items=items, name=spec)


class ReadCatalog(beam.PTransform):  # type: ignore[misc]
    """A PCollection of catalog items (dicts) from a :class:`CatalogSpec`."""

    def __init__(self, catalog: CatalogSpec, slices: Sequence[str] = ()) -> None:
        super().__init__()
        self.catalog = catalog
        self.slices = tuple(slices)

    def expand(self, pbegin: Any) -> Any:
        c = self.catalog
        if c.kind == "list":
            return pbegin | "Items" >> beam.Create(c.items, reshuffle=True)
        index = folder_label_index(c.label_names)
        if c.kind == "glob":
            return (
                pbegin
                | "Match" >> fileio.MatchFiles(str(c.pattern))
                | "ToItem" >> beam.Map(_glob_item, index)
            )
        return (
            pbegin
            | "Lines" >> beam.io.ReadFromText(str(c.csv_path), skip_header_lines=1)
            | "Parse"
            >> beam.FlatMap(_csv_item, c.header, str(Path(str(c.csv_path)).parent), index, self.slices)
        )


def _glob_item(meta: Any, index: dict[str, int]) -> dict[str, Any]:
    path = meta.path
    parent = path.rstrip("/").rsplit("/", 2)[-2] if "/" in path else ""
    return {"id": path, "uri": path, "label": index.get(parent, -1), "slices": {"category": parent}}


def _csv_item(line: str, header: list[str], base: str, index: dict[str, int],
              slices: tuple[str, ...]) -> list[dict[str, Any]]:  # fmt: skip
    if not line.strip():
        return []
    row = dict(zip(header, next(csv.reader(io.StringIO(line))), strict=False))
    uri = (row.get("image") or "").strip()
    if "://" not in uri and not uri.startswith("/"):
        uri = f"{base}/{uri}"
    category = (row.get("category") or "").strip()
    return [{
        "id": (row.get("id") or "").strip(), "uri": uri, "label": index.get(category, -1),
        "slices": {"category": category, **{s: (row.get(s) or "").strip() for s in slices}},
    }]  # fmt: skip


_read = Metrics.counter(NAMESPACE, "images_read")


def decode(item: dict[str, Any]) -> tuple[str, np.ndarray]:
    """(id, image) of an item; raises ValueError with the reason for a file that cannot be used."""
    if not item.get("id"):
        raise ValueError("catalog row without an id")
    img = item.get("array")
    if img is None:
        uri = item["uri"]
        try:
            with FileSystems.open(uri) as fh:
                data = fh.read()
        except Exception as exc:  # any filesystem: missing file, permissions, a bucket error
            raise ValueError(f"cannot open {uri}: {exc}") from None
        img = decode_image(data)
        if img is None:
            raise ValueError(f"{uri}: not an image, or corrupt or truncated ({len(data)} bytes)")
    if min(img.shape[:2]) < MIN_FRAME_SIDE:
        side = f"{MIN_FRAME_SIDE}x{MIN_FRAME_SIDE}"
        raise ValueError(f"image is {img.shape[1]}x{img.shape[0]}; at least {side}")
    _read.inc()
    return str(item["id"]), np.asarray(img)


def failure_reason(err: Any) -> str:
    """The one-line reason of a dead letter (Beam gives (type, repr, traceback lines))."""
    if isinstance(err, (tuple, list)) and len(err) > 2 and err[2]:
        lines = "".join(err[2]).strip().splitlines()
        last = lines[-1] if lines else ""
        return (last.split(": ", 1)[1] if ": " in last else last)[:300]
    text = str(err[1]) if isinstance(err, (tuple, list)) and len(err) > 1 else str(err)
    return text.strip().splitlines()[0][:300] if text.strip() else "unknown error"


@contextlib.contextmanager
def quiet_pipeline() -> Iterator[None]:
    """Beam's own log lines (and its workers', which inherit our stderr) off the CLI's output."""
    import logging

    from shoplens.internal.quiet import quiet_native_stderr

    loggers = [logging.getLogger(n) for n in ("apache_beam", "root", "distributed")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with quiet_native_stderr():
            yield
    finally:
        for lg, lvl in zip(loggers, levels, strict=True):
            lg.setLevel(lvl)


def _write_batch(lines: list[str], prefix: str) -> None:
    """One batch of lines into one new file, written and closed here (no bundle lifecycle: some
    runners do not call ``finish_bundle``)."""
    import uuid

    fh = FileSystems.create(f"{prefix}-{uuid.uuid4().hex}.jsonl")
    try:
        fh.write("".join(line + "\n" for line in lines).encode("utf-8"))
    finally:
        fh.close()


class WriteLines(beam.PTransform):  # type: ignore[misc]
    """Text lines to ``shards`` files under a prefix: results a pipeline hands back to the driver.

    Lines are spread over shards by a stable hash and grouped, then each group is written and
    closed in one step, with no bundle lifecycle or side input involved.
    """

    def __init__(self, prefix: str, shards: int = 16) -> None:
        super().__init__()
        self.prefix = prefix
        self.shards = shards

    def expand(self, pcoll: Any) -> Any:
        shards = self.shards
        keyed = pcoll | "Shard" >> beam.Map(lambda line: (zlib.crc32(line.encode("utf-8")) % shards, line))
        grouped = keyed | "Group" >> beam.GroupByKey()
        return grouped | "Write" >> beam.MapTuple(lambda _k, lines: _write_batch(list(lines), self.prefix))
