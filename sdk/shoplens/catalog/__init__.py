"""Visual search over a product catalog: build an index, search it, update it.

* :func:`build_index` streams a catalog (image folder or products CSV) through an embedding model
  into an index directory, in checkpointed chunks (resumable, bounded memory);
  :func:`index_from_vectors` indexes embeddings computed elsewhere;
* :class:`CatalogIndex` opens an index by memory-mapping it and answers ``search`` (cosine top-k,
  filtered by category, attribute columns and price);
* :func:`add_products` and :func:`remove_products` update an index without a rebuild.

An index is ``exact`` (every query scans the vectors: small catalogs, and the ground truth) or
``hnsw`` (a usearch graph proposes candidates that the stored codes re-rank exactly; large
catalogs, ``pip install 'shoplens[search]'``). ``kind="auto"`` picks by size. Layout and protocol:
:mod:`shoplens.catalog.store`; the codes: :mod:`shoplens.catalog.codes`.
"""

from shoplens.catalog.build import KINDS, build_index, check_kind, finish_index, index_from_vectors
from shoplens.catalog.codes import to_codes
from shoplens.catalog.index import CatalogIndex
from shoplens.catalog.source import CatalogSource, Product, SearchHit, read_catalog
from shoplens.catalog.store import HNSW_FROM, INDEX_FORMAT
from shoplens.catalog.update import add_products, add_vectors, remove_products

__all__ = [
    "HNSW_FROM",
    "INDEX_FORMAT",
    "KINDS",
    "CatalogIndex",
    "CatalogSource",
    "Product",
    "SearchHit",
    "add_products",
    "add_vectors",
    "build_index",
    "check_kind",
    "finish_index",
    "index_from_vectors",
    "read_catalog",
    "remove_products",
    "to_codes",
]
