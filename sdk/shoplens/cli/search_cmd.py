"""``shoplens index build|add|remove|info`` and ``shoplens search``: visual product search."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from shoplens.cli._common import JsonFlag, OverwriteFlag, out_console, print_json, show_progress
from shoplens.open_set import PROFILE_NAME, REFERENCE

# the embedding model of an existing index: it names its own, and another one is refused
IndexModel = Annotated[
    Path | None, typer.Option("--model", "-m", help="Embedding model (default: the one the index names).")
]

index_app = typer.Typer(
    help="Build, update and inspect a product index for visual search.", no_args_is_help=True
)
search_app = typer.Typer()

_KIND_HELP = (
    "exact, hnsw (a usearch graph: pip install 'shoplens[search]') or auto (hnsw from 50,000 products)."
)


@index_app.command("build")
def build_command(
    catalog: Annotated[
        Path, typer.Argument(help="Image folder (one subfolder per category) or products CSV.")
    ],
    model: Annotated[
        Path, typer.Option("--model", "-m", help="embedding.tflite from 'convert --embedding'.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Index directory to write.")],
    kind: Annotated[str, typer.Option("--kind", help=_KIND_HELP)] = "auto",
    chunk: Annotated[int, typer.Option("--chunk", min=1, help="Images per checkpointed chunk.")] = 512,
    overwrite: OverwriteFlag = False,
    runner: Annotated[
        str | None, typer.Option("--runner", help="Embed on Apache Beam: direct, dask, flink, spark.")
    ] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Beam worker processes.")] = 2,
    json_out: JsonFlag = False,
) -> None:
    """Embed every catalog image into an index (resumes an interrupted build automatically).

    With --runner the images are embedded on Apache Beam (shoplens[beam]); the index is the same.

    Example: shoplens index build out/catalog/products.csv -m out/model/embedding.tflite -o out/index
    """
    from shoplens.catalog import check_kind

    check_kind(kind)
    if runner is not None:
        from shoplens.beam import build_index_on_beam  # lazy: Apache Beam only here

        m = build_index_on_beam(catalog, model, out, kind=kind, runner=runner, workers=workers,
                                overwrite=overwrite)  # fmt: skip
    else:
        from shoplens.catalog import build_index

        m = build_index(catalog, model, out, kind=kind, chunk=chunk, overwrite=overwrite,
                        show_progress=show_progress(json_out))  # fmt: skip
    if json_out:
        print_json(m)
    else:
        out_console.print(
            f"indexed {m['count']} products ({m['skipped']} images skipped) into {out}: "
            f"{m['kind']}, {m['dim']}-d codes of {m['codes']['bits']} bits, "
            f"{m['build_seconds']} s{' (resumed)' if m['resumed'] else ''}"
        )
        if m.get("note"):
            out_console.print(f"note: {m['note']}")


@index_app.command("add")
def add_command(
    index: Annotated[Path, typer.Argument(help="Index directory to add to.")],
    catalog: Annotated[Path, typer.Argument(help="Image folder or products CSV of the new products.")],
    model: IndexModel = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Products already in the index are replaced (else refused).")
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Add products to an index without rebuilding it.

    Example: shoplens index add out/index new_products.csv
    """
    from shoplens.catalog import add_products

    r = add_products(index, catalog, model=model, replace=replace, show_progress=show_progress(json_out))
    if json_out:
        print_json(r)
    else:
        out_console.print(
            f"added {r['added']} and replaced {r['replaced']} products ({r['skipped']} images skipped); "
            f"{index} holds {r['products']} products"
        )


@index_app.command("remove")
def remove_command(
    index: Annotated[Path, typer.Argument(help="Index directory to remove from.")],
    ids: Annotated[list[str] | None, typer.Argument(help="Product ids to remove.")] = None,
    ids_file: Annotated[
        Path | None, typer.Option("--ids-file", help="A file with one product id per line.")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Remove products from an index; they never come back in results.

    Example: shoplens index remove out/index SKU-00017 SKU-00018
    """
    from shoplens.catalog import remove_products
    from shoplens.errors import DataError

    wanted = list(ids or [])
    if ids_file is not None:
        try:
            wanted += [x.strip() for x in ids_file.read_text(encoding="utf-8").splitlines() if x.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"cannot read {ids_file}: {exc}") from None
    r = remove_products(index, wanted)
    if json_out:
        print_json(r)
    else:
        out_console.print(f"removed {r['removed']} products; {index} holds {r['products']} products")


@index_app.command("info")
def info_command(
    index: Annotated[Path, typer.Argument(help="Index directory.")],
    verify: Annotated[bool, typer.Option("--verify", help="Check every file's sha256 too.")] = False,
    json_out: JsonFlag = False,
) -> None:
    """What an index holds: kind, products, sizes per product, model, filter columns.

    Example: shoplens index info out/index --json
    """
    from shoplens.catalog import CatalogIndex

    idx = CatalogIndex.load(index, verify=verify)
    doc: dict[str, Any] = {**idx.stats(), "model_sha256": idx.manifest.get("model_sha256"),
                           "model_path": idx.manifest.get("model_path"), "categories": list(idx.categories),
                           "filter_columns": list(idx.filter_columns), "verified": verify}  # fmt: skip
    if json_out:
        print_json(doc)
        return
    out_console.print(
        f"{index}: {doc['kind']} index of {doc['products']} products "
        f"({doc['rows'] - doc['products']} removed), "
        f"{doc['dim']}-d codes of {doc['code_bits']} bits\n"
        f"bytes per product: search {doc['bytes_per_item_search']}, filters {doc['bytes_per_item_filters']}, "
        f"records {doc['bytes_per_item_records']} ({doc['bytes_total'] / 1e6:.1f} MB in all)\n"
        f"filter columns: {', '.join(doc['filter_columns'])}\nmodel: {doc['model_path']}"
        + ("\nevery file's sha256 matches the manifest" if verify else "")
    )


def _where(items: list[str] | None) -> dict[str, str]:
    from shoplens.errors import UsageError

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--where takes COLUMN=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


@search_app.command("search")
def search_command(
    index: Annotated[Path, typer.Argument(help="Index directory from 'shoplens index build'.")],
    image: Annotated[Path, typer.Argument(help="Query photo.")],
    model: IndexModel = None,
    k: Annotated[int, typer.Option("--k", help="Products to return.")] = 10,
    category: Annotated[
        str | None, typer.Option("--category", help="Only products of this category.")
    ] = None,
    classifier: Annotated[
        Path | None,
        typer.Option("--classifier", help="Classifier .tflite: filter by its predicted category."),
    ] = None,
    where: Annotated[
        list[str] | None,
        typer.Option("--where", help="Only products with COLUMN=VALUE (repeatable), e.g. brand=Acme."),
    ] = None,
    colour: Annotated[
        str | None, typer.Option("--colour", "--color", help="Only products of this main colour, e.g. red.")
    ] = None,
    min_price: Annotated[
        float | None, typer.Option("--min-price", help="Only products at this price or more.")
    ] = None,
    max_price: Annotated[
        float | None, typer.Option("--max-price", help="Only products at this price or less.")
    ] = None,
    exact: Annotated[bool, typer.Option("--exact", help="Scan every vector, even in an hnsw index.")] = False,
    min_similarity: Annotated[
        float | None,
        typer.Option("--min-similarity", help="'No product recognised' when the nearest catalog product is "
                     f"less similar (cosine; {REFERENCE.min_similarity} is calibrated for the reference "
                     "model, docs/sdk.md)."),
    ] = None,
    min_score: Annotated[
        float | None,
        typer.Option("--min-score", help="With --classifier: 'no product recognised' under this top-1 "
                     f"probability ({REFERENCE.min_score} for the reference model)."),
    ] = None,
    open_set_profile: Annotated[
        Path | None,
        typer.Option("--open-set-profile", help="'No product recognised' when the photo's embedding is "
                     "farther from every class than the profile allows (the reference model's: "
                     f"{PROFILE_NAME} beside its embedding.tflite; docs/sdk.md)."),
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Find the catalog products that look most like the photo (cosine top-k).

    With --min-similarity or --open-set-profile (and --min-score with --classifier) a photo of
    something that is not a product (a shelf label, a wall) gets "no product recognised" and no results.

    Example: shoplens search out/index photo.jpg --classifier out/model.tflite --where brand=Acme --k 5
    """

    from shoplens.catalog import CatalogIndex
    from shoplens.classifier import Classifier
    from shoplens.data.datasets import read_image
    from shoplens.embedder import Embedder
    from shoplens.errors import DataError, UsageError
    from shoplens.open_set import OpenSetOptions

    if k <= 0:
        raise UsageError(f"--k must be a positive integer, got {k}")
    if min_score is not None and classifier is None:
        raise UsageError("--min-score goes with --classifier (the classifier's top-1 probability)")
    emb_open_set = OpenSetOptions(min_similarity=min_similarity, profile=open_set_profile)
    conditions = _where(where)
    idx = CatalogIndex.load(index)  # what is wrong with the index is said first
    model = model or idx.model_path
    if model is None:
        raise DataError(f"{index} names no embedding model; pass --model")
    idx.check_model(model)
    if category is not None and category not in idx.categories:
        raise UsageError(f"unknown category {category!r}; the index has: {', '.join(idx.categories)}")
    if colour is not None and "colour" not in idx.filter_columns:
        raise UsageError(f"{index} has no product colours: rebuild it, or give the catalog a colour column")
    for col in conditions:
        if col not in idx.filter_columns:
            raise UsageError(f"cannot filter on {col!r}; filter columns: {', '.join(idx.filter_columns)}")
    frame = read_image(image)
    if frame is None:
        raise DataError(f"cannot read image {image}")
    predicted = None
    is_product: bool | None = None
    if classifier is not None:
        clf_open_set = OpenSetOptions(min_score=min_score)
        with Classifier.create_from_model_path(classifier, open_set=clf_open_set) as clf:
            r = clf.classify(frame)
            predicted = r.top.label if r.top else None
            is_product = r.is_product
        category = category or predicted
    with Embedder.create_from_model_path(model, open_set=emb_open_set) as emb:
        res = emb.embed(frame)
        if res.embedding is not None and is_product is not False and emb_open_set.enabled:
            nearest = idx.search(res.embedding, 1, exact=exact) if min_similarity is not None else []
            is_product = emb.is_product(nearest, embedding=res.embedding)  # the nearest of all
    hits = []
    price = (min_price, max_price) if min_price is not None or max_price is not None else None
    searchable = category is None or category in idx.categories
    if res.embedding is not None and is_product is not False and searchable:
        hits = idx.search(res.embedding, k, category=category, where=conditions, price=price, colour=colour,
                          exact=exact)  # fmt: skip
    doc = {"query": str(image), "category_filter": category, "predicted_category": predicted,
           "where": conditions, "colour": colour, "price": list(price) if price else None,
           "index_kind": idx.kind, "is_product": is_product,
           "exact": exact or idx.kind == "exact", "results": [h.to_dict() for h in hits]}  # fmt: skip
    if json_out:
        print_json(doc)
        return
    if is_product is False:
        out_console.print("no product recognised: photograph one item, filling most of the picture")
        return
    if category:
        out_console.print(f"category: {category}" + (" (predicted)" if predicted == category else ""))
    for rank, h in enumerate(hits, 1):
        p = h.product
        price_s = f"{p.price:.2f}" if p.price is not None else "-"
        out_console.print(f"{rank:>2}. {h.score:.3f}  {p.id:<14} {p.category:<14} {price_s:>8}  {p.image}")
