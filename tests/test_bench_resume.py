"""`python -m benchmarks --resume`: a stopped full bench keeps every section it finished.

The sections here are small stand-ins (the real ones take hours); what is tested is the run's
bookkeeping: each finished section is written at once, a resumed run skips exactly those, a run on
another reference model starts over, and the page and results appear only when every section ran.
"""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest

bench = pytest.importorskip("benchmarks.__main__")


def _setup(monkeypatch: pytest.MonkeyPatch, calls: list[str], fail: set[str], model: str = "ref-a.tflite"):
    def section(key: str, value: dict):
        def run(_ctx: object) -> dict:
            calls.append(key)
            if key in fail:
                raise RuntimeError(f"section {key} killed")
            return value

        return run

    monkeypatch.setattr(bench, "SECTIONS", (
        ("peers", "peers", section("peers", {"frames": 3, "peers": {}})),
        ("soak", "soak", section("soak", {"soak": {"frames": 10, "rss_growth_after_warmup_mb": 0.1}})),
        ("search", "search", section("search", {"search": {}})),
    ))  # fmt: skip
    monkeypatch.setattr(bench, "Run", lambda out, quick: types.SimpleNamespace(model=Path(model)))
    monkeypatch.setattr(bench, "render_markdown", lambda r: f"page with {sorted(r['sections'])}\n")


def test_a_stopped_run_keeps_its_sections_and_a_resumed_run_does_only_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    _setup(monkeypatch, calls, fail={"soak"})
    with pytest.raises(RuntimeError, match="soak killed"):
        bench.main(["--quick", "--out", str(tmp_path)])
    partial = tmp_path / "bench-partial-quick.json"
    kept = json.loads(partial.read_text())
    assert sorted(kept["sections"]) == ["peers"] and kept["frames"] == 3
    assert not list(tmp_path.glob("*-quick.md"))  # no page from a part of the run

    calls.clear()
    _setup(monkeypatch, calls, fail=set())
    assert bench.main(["--quick", "--out", str(tmp_path), "--resume"]) == 0
    assert calls == ["soak", "search"]  # peers was kept, not measured again
    assert not partial.exists()
    (res,) = tmp_path.glob("*-quick.json")  # the partial file is gone
    r = json.loads(res.read_text())
    assert sorted(r["sections"]) == ["peers", "search", "soak"] and r["frames"] == 3
    assert r["targets"]["RSS growth <= 5 MB in LIVE_STREAM"][1] is True
    assert (tmp_path / "benchmarks-quick.md").read_text() == "page with ['peers', 'search', 'soak']\n"


def test_only_runs_some_sections_and_another_model_starts_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[str] = []
    _setup(monkeypatch, calls, fail=set())
    assert bench.main(["--quick", "--out", str(tmp_path), "--only", "soak"]) == 0
    assert calls == ["soak"] and "peers, search not run yet" in capsys.readouterr().out
    assert bench.main(["--quick", "--out", str(tmp_path), "--only", "peers"]) == 0
    kept = json.loads((tmp_path / "bench-partial-quick.json").read_text())
    assert sorted(kept["sections"]) == ["peers", "soak"]

    calls.clear()
    _setup(monkeypatch, calls, fail=set(), model="ref-b.tflite")
    assert bench.main(["--quick", "--out", str(tmp_path), "--resume"]) == 0
    assert "not resuming" in capsys.readouterr().out and calls == ["peers", "soak", "search"]


def test_peers_are_measured_in_interleaved_rounds_and_keep_the_median_round(tiny_rgb, tmp_path: Path) -> None:
    """Real peer processes on a real int8 model: every round of every peer is kept, a peer's figures
    are its median round's, and a peer that fails says why instead of stopping the others."""
    import numpy as np

    from benchmarks.peers import run_peers

    frames = tmp_path / "frames.npy"
    np.save(frames, np.random.default_rng(0).integers(0, 256, (4, 48, 64, 3), dtype=np.uint8))
    res = run_peers(tiny_rgb["int8"], frames, 30, ("invoke", "shoplens", "no-such-peer"), rounds=3)
    for peer in ("invoke", "shoplens"):
        r = res[peer]
        assert len(r["rounds_p50_ms"]) == len(r["rounds_fps"]) == 3
        assert r["p50_ms"] == sorted(r["rounds_p50_ms"])[1]
        assert (r["p50_ms"], r["fps"]) in zip(r["rounds_p50_ms"], r["rounds_fps"], strict=True)
    assert "invalid choice" in res["no-such-peer"]["error"]


def test_targets_take_ratios_within_a_round() -> None:
    """With interleaved rounds a ratio pairs peers measured side by side in one round; without, the
    single figures. (Medians from different rounds would pair a fast spell with a slow one.)"""
    from benchmarks.targets import paired_ratio

    a = {"p50_ms": 2.0, "rounds_p50_ms": [1.0, 2.0, 3.0]}
    b = {"p50_ms": 2.0, "rounds_p50_ms": [3.0, 1.0, 2.0]}
    assert paired_ratio(a, b, "p50_ms") == 1.5  # ratios 1/3, 2, 1.5 (the medians alone would say 1.0)
    b["rounds_p50_ms"] = [3.0, 1.0]  # rounds that do not pair up: the single figures
    assert paired_ratio(a, b, "p50_ms") == 1.0
    assert paired_ratio({"fps": 30.0}, {"fps": 10.0}, "fps") == 3.0


def test_a_section_names_the_checkout_and_only_code_changes_make_it_dirty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)  # fmt: skip

    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "docs").mkdir()
    for f in ("code.py", "benchmarks/results/bench-partial.json", "docs/benchmarks.md"):
        (tmp_path / f).write_text("1\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "base")
    monkeypatch.setattr(bench, "ROOT", tmp_path)
    head = bench._commit()
    assert head and not head.endswith("-dirty")
    # the run writes its own checkpoint and page: the measured code is still the commit's
    (tmp_path / "benchmarks/results/bench-partial.json").write_text("2\n")
    (tmp_path / "docs/benchmarks.md").write_text("2\n")
    assert bench._commit() == head
    (tmp_path / "code.py").write_text("2\n")
    assert bench._commit() == head + "-dirty"
    monkeypatch.setattr(bench, "ROOT", tmp_path / "no-such-dir")
    assert bench._commit() == ""
