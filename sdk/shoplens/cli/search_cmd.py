"""``shoplens index build`` and ``shoplens search``: visual product search over a catalog index."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from shoplens.cli._common import out_console, print_json, show_progress

index_app = typer.Typer(help="Build a product index for visual search.", no_args_is_help=True)
search_app = typer.Typer()


@index_app.command("build")
def build_command(
    catalog: Annotated[
        Path, typer.Argument(help="Image folder (one subfolder per category) or products CSV.")
    ],
    model: Annotated[
        Path, typer.Option("--model", "-m", help="embedding.tflite from 'convert --embedding'.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Index directory to write.")],
    dtype: Annotated[str, typer.Option("--dtype", help="Stored vectors: int8 or float16.")] = "int8",
    chunk: Annotated[int, typer.Option("--chunk", min=1, help="Images per checkpointed chunk.")] = 512,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Rebuild an existing index.")] = False,
    runner: Annotated[
        str | None, typer.Option("--runner", help="Embed on Apache Beam: direct, dask, flink, spark.")
    ] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Beam worker processes.")] = 2,
    json_out: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Embed every catalog image into an index (resumes an interrupted build automatically).

    With --runner the images are embedded on Apache Beam (shoplens[beam]); the index is the same.

    Example: shoplens index build out/catalog/products.csv -m out/model/embedding.tflite -o out/index
    """
    if runner is not None:
        from shoplens.beam import build_index_on_beam  # lazy: Apache Beam only here

        m = build_index_on_beam(catalog, model, out, dtype=dtype, runner=runner, workers=workers,
                                overwrite=overwrite)  # fmt: skip
    else:
        from shoplens.catalog import build_index

        m = build_index(catalog, model, out, dtype=dtype, chunk=chunk, overwrite=overwrite,
                        show_progress=show_progress(json_out))  # fmt: skip
    if json_out:
        print_json(m)
    else:
        out_console.print(
            f"indexed {m['count']} products ({m['skipped']} images skipped) into {out}: "
            f"{m['dim']}-d {m['dtype']}, "
            f"{m['build_seconds']} s{' (resumed)' if m['resumed'] else ''}"
        )


@search_app.command("search")
def search_command(
    index: Annotated[Path, typer.Argument(help="Index directory from 'shoplens index build'.")],
    image: Annotated[Path, typer.Argument(help="Query photo.")],
    model: Annotated[
        Path | None, typer.Option("--model", "-m", help="Embedding model (default: the one the index names).")
    ] = None,
    k: Annotated[int, typer.Option("--k", help="Products to return.")] = 10,
    category: Annotated[
        str | None, typer.Option("--category", help="Only products of this category.")
    ] = None,
    classifier: Annotated[
        Path | None,
        typer.Option("--classifier", help="Classifier .tflite: filter by its predicted category."),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Find the catalog products that look most like the photo (exact cosine top-k)."""

    from shoplens.catalog import CatalogIndex
    from shoplens.classifier import Classifier
    from shoplens.data.datasets import read_image
    from shoplens.embedder import Embedder
    from shoplens.errors import DataError, UsageError

    if k <= 0:
        raise UsageError(f"--k must be a positive integer, got {k}")
    idx = CatalogIndex.load(index)  # what is wrong with the index is said first
    model = model or idx.model_path
    if model is None:
        raise DataError(f"{index} names no embedding model; pass --model")
    idx.check_model(model)
    if category is not None and category not in idx.categories:
        raise UsageError(f"unknown category {category!r}; the index has: {', '.join(idx.categories)}")
    frame = read_image(image)
    if frame is None:
        raise DataError(f"cannot read image {image}")
    predicted = None
    if classifier is not None:
        with Classifier.create_from_model_path(classifier) as clf:
            top = clf.classify(frame).top
            predicted = top.label if top else None
        category = category or predicted
    with Embedder.create_from_model_path(model) as emb:
        res = emb.embed(frame)
    hits = []
    if res.embedding is not None and (category is None or category in idx.categories):
        hits = idx.search(res.embedding, k, category=category)
    doc = {"query": str(image), "category_filter": category, "predicted_category": predicted,
           "results": [h.to_dict() for h in hits]}  # fmt: skip
    if json_out:
        print_json(doc)
        return
    if category:
        out_console.print(f"category: {category}" + (" (predicted)" if predicted == category else ""))
    for rank, h in enumerate(hits, 1):
        p = h.product
        price = f"{p.price:.2f}" if p.price is not None else "-"
        out_console.print(f"{rank:>2}. {h.score:.3f}  {p.id:<14} {p.category:<14} {price:>8}  {p.image}")
