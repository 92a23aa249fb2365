"""``shoplens index build --runner ...``: embed a whole catalog on Beam, then one index.

    products --decode (dead letters)--> (product, image) --RunInference(LiteRT embedding model)
        --> (product, vector) --> shards of JSON lines --> the driver: one index (``finish_index``)

The workers embed through the same SDK path as the in-process build (``Embedder``, unit vectors,
then the index's codes), so both give the same vectors and the same search
results; ``shoplens search`` and ``CatalogIndex.load`` open the result unchanged.
"""

from __future__ import annotations

import base64
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference

from shoplens.beam.handler import LiteRTModelHandler
from shoplens.beam.items import WriteLines, decode, failure_reason, quiet_pipeline
from shoplens.beam.runners import pipeline_options
from shoplens.catalog import check_kind, finish_index, read_catalog, to_codes
from shoplens.errors import DataError, ModelError
from shoplens.internal.atomic import sha256_file
from shoplens.internal.outputs import output_lock, publish_output_dir, remove_path, stage_output_dir

__all__ = ["build_index_on_beam"]


def _decode_product(item: dict[str, Any]) -> tuple[str, np.ndarray]:
    _key, img = decode(item)
    return json.dumps(item["product"], separators=(",", ":")), img


def _shard_line(kv: tuple[str, Any]) -> str:
    vec = to_codes(np.asarray(kv[1].inference, np.float32)[None])[0]
    return json.dumps({"p": kv[0], "v": base64.b64encode(vec.tobytes()).decode("ascii")})


def _bad_line(bad: Any) -> str:
    item, err = bad
    return json.dumps({"id": str(item.get("id", "")), "reason": failure_reason(err)})


def build_index_on_beam(
    catalog: str | Path,
    embedder_model: str | Path,
    out: str | Path,
    *,
    kind: str = "auto",
    runner: str = "direct",
    workers: int = 2,
    overwrite: bool = False,
    beam_args: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Build the index of ``catalog`` (image folder or products CSV) on Beam; returns the manifest.

    Raises:
      ModelError: the embedding model is missing or not an embedding model.
      DataError: a missing, empty or malformed catalog, or no image that could be used.
      UsageError: an output that would replace an input or a foreign folder.
    """
    from shoplens.embedder import Embedder

    check_kind(kind)
    t0 = time.perf_counter()
    src = read_catalog(catalog)
    model = Path(embedder_model)
    if not model.is_file():
        raise ModelError(f"embedding model {model} does not exist")
    with Embedder.create_from_model_path(model) as emb:  # in the driver first: a bad model fails here
        dim = emb.dim
    out = Path(out)
    items = [{"id": p.id, "uri": p.image, "product": p.to_dict()} for p in src.rows()]
    with output_lock(out):
        stage = stage_output_dir(out, overwrite=overwrite, inputs=[src.path, model])
        try:
            with tempfile.TemporaryDirectory(prefix="shoplens-beam-index-") as tmp:
                with pipeline_options(runner, workers=workers, extra=beam_args) as opts:
                    p = beam.Pipeline(options=opts)
                    products = p | "Products" >> beam.Create(items, reshuffle=True)
                    good, bad = products | "Decode" >> beam.Map(_decode_product).with_exception_handling()
                    keyed = KeyedModelHandler(LiteRTModelHandler(model))
                    lines = good | "Embed" >> RunInference(keyed) | "Line" >> beam.Map(_shard_line)
                    _ = lines | "Shards" >> WriteLines(f"{tmp}/shard")
                    _ = bad | "Reasons" >> beam.Map(_bad_line) | "Bad" >> WriteLines(f"{tmp}/bad")
                    with quiet_pipeline():
                        p.run().wait_until_finish()
                shards = sorted(Path(tmp).glob("shard*"))
                dead = [json.loads(x) for f in sorted(Path(tmp).glob("bad*"))
                        for x in f.read_text().splitlines() if x]  # fmt: skip
                kept = sum(1 for f in shards for x in f.read_text().splitlines() if x)
                if kept == 0:
                    raise DataError(f"none of the {src.count} catalog images in {src.path} could be read")
                _assemble(stage, shards, kept, dim)
            manifest = finish_index(stage, kept, {
                "model_sha256": sha256_file(model), "model_path": str(model.resolve()), "skipped": len(dead),
                "skipped_images": dead[:1000], "catalog": str(src.path), "runner": f"beam:{runner}",
                "workers": workers, "build_seconds": round(time.perf_counter() - t0, 2), "resumed": False,
            }, kind=kind)  # fmt: skip
            publish_output_dir(stage, out, command="index build --runner")
        except BaseException:
            remove_path(stage)
            raise
    return manifest


def _assemble(stage: Path, shards: list[Path], kept: int, dim: int) -> None:
    """Shards into the work folder's ``codes.partial.npy`` and ``products.jsonl`` (streamed)."""
    vecs = np.lib.format.open_memmap(stage / "codes.partial.npy", mode="w+", dtype=np.int8,
                                     shape=(kept, dim))  # fmt: skip
    i = 0
    with (stage / "products.jsonl").open("w", encoding="utf-8") as fh:
        for shard in shards:
            with shard.open(encoding="utf-8") as lines:
                for line in lines:
                    if not line.strip():
                        continue
                    row = json.loads(line)
                    vecs[i] = np.frombuffer(base64.b64decode(row["v"]), np.int8)
                    fh.write(row["p"] + "\n")
                    i += 1
    vecs.flush()
