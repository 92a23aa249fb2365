"""Recipes as data, the paired accuracy drop, and the report's Markdown."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from shoplens.drift.paired import PairedMetrics
from shoplens.errors import DataError, UsageError
from shoplens_convert.pipeline import ConvertOptions
from shoplens_convert.recipes import load_recipe, recipe_names


def test_shipped_recipes_load() -> None:
    names = recipe_names()
    assert names == ["auto", "dynamic", "float16", "float32", "int8", "pqat-int8", "qat-int8"]
    for n in names:
        r = load_recipe(n)
        assert r.name == n and r.description
    assert load_recipe("pqat-int8").preserve_sparsity and load_recipe("pqat-int8").requires_prune
    assert load_recipe("auto").candidates == ("int8", "int8-fallback", "dynamic", "float16")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("{not json", "not valid JSON"),
        ('{"name": "x", "quantization": "int4"}', "quantization must be one of"),
        ('{"name": "x", "quantization": "int8", "speed": 1}', "unknown fields"),
        ('{"name": "x", "quantization": "float16", "qat": true}', "QAT needs int8"),
        ('{"name": "x", "quantization": "auto", "candidates": ["int4"]}', "unknown candidates"),
        ('{"name": "x", "quantization": "int8", "fine_tune": {"epochs": 0}}', "epochs"),
        ("[1, 2]", "JSON object"),
    ],
)
def test_bad_recipe_files(tmp_path: Path, content: str, needle: str) -> None:
    p = tmp_path / "r.json"
    p.write_text(content)
    with pytest.raises(UsageError, match=needle):
        load_recipe(p)


def test_unknown_recipe_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown recipe 'int4'; choose one of auto, dynamic"):
        load_recipe("int4")
    with pytest.raises(UsageError, match="does not exist"):
        load_recipe(tmp_path / "nope.json")


def _one_hot(pred: np.ndarray, k: int = 10) -> np.ndarray:
    s = np.full((len(pred), k), 0.01)
    s[np.arange(len(pred)), pred] = 1 - 0.01 * (k - 1)
    return s


def test_paired_metrics_drop_ci_and_exact_merge() -> None:
    """The guard's and drift's one accumulator: a known drop, and merging is exact for counts."""
    y = np.arange(1000) % 10
    cand = y.copy()
    cand[:20] = (cand[:20] + 1) % 10  # 20 of 1000 newly wrong: 2 points
    whole = PairedMetrics(10)
    whole.add(_one_hot(y), _one_hot(cand), y, [f"i{j}" for j in range(1000)])
    r = whole.result()
    lo, hi = r.drop_ci95
    assert r.drop == pytest.approx(2.0) and lo < 2.0 < hi and lo > 1.0
    assert r.agreement == pytest.approx(0.98) and r.disagreeing_ids[:2] == ["i0", "i1"]
    parts = [PairedMetrics(10) for _ in range(3)]
    for k, part in enumerate(parts):
        sl = slice(k * 400, (k + 1) * 400)
        part.add(_one_hot(y[sl]), _one_hot(cand[sl]), y[sl])
    m = PairedMetrics.merged(parts, 10).result()
    assert m.n == r.n and np.array_equal(m.cand_confusion, r.cand_confusion)
    assert m.agreement == r.agreement and m.drop_ci95 == r.drop_ci95 and m.drop == r.drop
    same = PairedMetrics(10)
    same.add(_one_hot(y), _one_hot(y), y)
    assert same.result().drop == 0.0 and same.result().drop_ci95 == (0.0, 0.0)
    with pytest.raises(DataError, match="expected"):
        same.add(_one_hot(y[:5]), _one_hot(y), y)
    with pytest.raises(DataError, match="no images"):
        PairedMetrics(10).result()


def test_convert_options_validation() -> None:
    with pytest.raises(UsageError, match="between 0 and 1"):
        ConvertOptions(prune=1.0, train_data="fashion-mnist:train:10")
    with pytest.raises(UsageError, match="needs --train-data"):
        ConvertOptions(prune=0.5)
    with pytest.raises(UsageError, match="needs --eval-data"):
        ConvertOptions(max_drop=0.5)
    with pytest.raises(UsageError, match="--min-agreement needs --eval-data"):
        ConvertOptions(min_agreement=93)
    with pytest.raises(UsageError, match=r"0\.\.100"):
        ConvertOptions(min_agreement=101, eval_data="fashion-mnist:test:10")
    with pytest.raises(UsageError, match="--target"):
        ConvertOptions(target="gpu")
    with pytest.raises(UsageError, match="needs --bake-preprocessing"):
        ConvertOptions(bake_bgr=True)
    with pytest.raises(UsageError, match="add --prune"):
        ConvertOptions(recipe="pqat-int8", train_data="fashion-mnist:train:10").resolved_recipe()
    with pytest.raises(UsageError, match="full-integer"):
        ConvertOptions(recipe="dynamic", target="edgetpu").resolved_recipe()
    assert json.dumps(load_recipe("qat-int8").to_dict())
