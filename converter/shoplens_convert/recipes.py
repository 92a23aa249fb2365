"""Quantization recipes are data: small JSON files shipped in this package (``recipes/``).

``--recipe`` takes a shipped name or the path of a JSON file with the same fields.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoplens.errors import UsageError
from shoplens_convert.finetune import FineTuneOptions

__all__ = ["AUTO_CANDIDATES", "QUANTIZATIONS", "Recipe", "load_recipe", "recipe_names"]

_DIR = Path(__file__).with_name("recipes")
QUANTIZATIONS = ("float32", "float16", "dynamic", "int8", "auto")
AUTO_CANDIDATES = ("int8", "int8-fallback", "dynamic", "float16")
_KEYS = {
    "name", "description", "quantization", "needs_calibration", "qat", "preserve_sparsity",
    "requires_prune", "fine_tune", "candidates", "fallback_max_layers",
}  # fmt: skip


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    quantization: str
    needs_calibration: bool = False
    qat: bool = False
    preserve_sparsity: bool = False
    requires_prune: bool = False
    fine_tune: FineTuneOptions | None = None
    candidates: tuple[str, ...] = ()
    fallback_max_layers: int = 8
    source: str = ""

    def __post_init__(self) -> None:
        if self.quantization not in QUANTIZATIONS:
            raise UsageError(
                f"recipe {self.name!r}: quantization must be one of {', '.join(QUANTIZATIONS)}, "
                f"got {self.quantization!r}"
            )
        if self.qat and self.quantization != "int8":
            raise UsageError(f"recipe {self.name!r}: QAT needs int8 quantization")
        if self.preserve_sparsity and not self.qat:
            raise UsageError(f"recipe {self.name!r}: preserve_sparsity only applies to QAT")
        bad = [c for c in self.candidates if c not in AUTO_CANDIDATES]
        if bad:
            raise UsageError(f"recipe {self.name!r}: unknown candidates {bad}; choose from {AUTO_CANDIDATES}")
        if self.quantization == "auto" and not self.candidates:
            raise UsageError(f"recipe {self.name!r}: an auto recipe needs candidates")
        if not 1 <= self.fallback_max_layers <= 64:
            raise UsageError(f"recipe {self.name!r}: fallback_max_layers must be in 1..64")

    @property
    def full_integer(self) -> bool:
        return self.quantization == "int8"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "quantization": self.quantization,
            "qat": self.qat,
            "preserve_sparsity": self.preserve_sparsity,
            "source": self.source,
        }
        if self.fine_tune:
            ft = self.fine_tune
            d["fine_tune"] = {
                "epochs": ft.epochs,
                "learning_rate": ft.learning_rate,
                "batch_size": ft.batch_size,
            }
        if self.candidates:
            d["candidates"] = list(self.candidates)
        return d


def recipe_names() -> list[str]:
    return sorted(p.stem for p in _DIR.glob("*.json"))


def _from_dict(d: Any, source: str) -> Recipe:
    if not isinstance(d, dict):
        raise UsageError(f"recipe {source} must be a JSON object")
    unknown = sorted(set(d) - _KEYS)
    if unknown:
        raise UsageError(f"recipe {source}: unknown fields {unknown}")
    for key in ("name", "quantization"):
        if not isinstance(d.get(key), str):
            raise UsageError(f"recipe {source}: field {key!r} must be a string")
    ft = d.get("fine_tune")
    try:
        fine = FineTuneOptions(**ft) if isinstance(ft, dict) else None
    except TypeError as exc:
        raise UsageError(f"recipe {source}: bad fine_tune block: {exc}") from None
    return Recipe(
        name=d["name"],
        description=str(d.get("description", "")),
        quantization=d["quantization"],
        needs_calibration=bool(d.get("needs_calibration", False)),
        qat=bool(d.get("qat", False)),
        preserve_sparsity=bool(d.get("preserve_sparsity", False)),
        requires_prune=bool(d.get("requires_prune", False)),
        fine_tune=fine,
        candidates=tuple(d.get("candidates", ())),
        fallback_max_layers=int(d.get("fallback_max_layers", 8)),
        source=source,
    )


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A shipped recipe by name, or a recipe JSON file by path."""
    s = str(name_or_path)
    shipped = _DIR / f"{s}.json"
    if "/" not in s and not s.endswith(".json"):
        if not shipped.is_file():
            raise UsageError(
                f"unknown recipe {s!r}; choose one of {', '.join(recipe_names())} or give a .json path"
            )
        path = shipped
    else:
        path = Path(s)
        if not path.is_file():
            raise UsageError(f"recipe file {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"recipe {path} is not valid JSON: {exc}") from None
    return _from_dict(data, "shipped" if path == shipped else str(path))
