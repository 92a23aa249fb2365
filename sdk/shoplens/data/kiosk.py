"""Kiosk scene generator: product images composited into camera-like BGR frames.

Each frame is a product on a textured background, filling 35-90 % of the centre crop, with a
random offset and a rotation of up to +-15 degrees, then a change of brightness and contrast,
Gaussian or motion blur, sensor noise and JPEG artefacts. A configurable share of frames is
deliberately bad (too blurry, too dark, overexposed) so the quality gate can be calibrated.

All geometry and blur are expressed relative to the centre-crop side, so the same code renders
640x480 kiosk frames and the small square crops used to train the reference model.

Reproducible: frame ``i`` of seed ``s`` depends only on ``(s, i)``, never on the order of work.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from shoplens.errors import DataError, UsageError
from shoplens.internal.atomic import atomic_write_text
from shoplens.internal.outputs import output_lock, publish_output_dir, remove_path, stage_output_dir
from shoplens.internal.progress import progress as _progress

__all__ = [
    "BAD_REASONS",
    "GROUND_TRUTH_CSV",
    "KioskConfig",
    "KioskFrameInfo",
    "generate_kiosk",
    "iter_kiosk_frames",
    "render_scene",
]

BAD_REASONS = ("blur", "dark", "overexposed")
GROUND_TRUTH_CSV = "ground_truth.csv"
VIDEO_NAME = "kiosk.avi"
_REF_SIDE = 480.0  # blur and noise figures below are for a 480-pixel centre crop


@dataclass(frozen=True)
class KioskConfig:
    """Distribution of the generated scenes. Validated when built."""

    width: int = 640
    height: int = 480
    fill: tuple[float, float] = (0.35, 0.90)
    max_rotation_deg: float = 15.0
    max_offset: float = 0.12
    brightness: tuple[float, float] = (0.75, 1.25)
    contrast: tuple[float, float] = (0.75, 1.2)
    blur_sigma: tuple[float, float] = (0.0, 1.5)
    motion_blur_prob: float = 0.15
    noise_sigma: tuple[float, float] = (0.0, 6.0)
    jpeg_quality: tuple[int, int] = (55, 95)
    bad_fraction: float = 0.1

    def __post_init__(self) -> None:
        if self.width < 16 or self.height < 16:
            raise UsageError(f"frame size must be at least 16x16, got {self.width}x{self.height}")
        lo, hi = self.fill
        if not 0.05 <= lo <= hi <= 1.0:
            raise UsageError(f"fill must satisfy 0.05 <= low <= high <= 1, got {self.fill}")
        if not 0.0 <= self.bad_fraction <= 1.0:
            raise UsageError(f"bad_fraction must be in [0, 1], got {self.bad_fraction}")
        if not 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 100:
            raise UsageError(f"jpeg_quality must be within [1, 100], got {self.jpeg_quality}")


@dataclass(frozen=True)
class KioskFrameInfo:
    index: int
    label: int
    label_name: str
    bad_reason: str
    source_index: int
    segment: int
    file: str


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A textured, shop-like background: lit gradient plus grain, stripes or tiles."""
    base = rng.uniform(40, 215, size=3)
    # low-frequency lighting
    light = cv2.resize(
        rng.uniform(0.7, 1.2, size=(3, 4)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC
    )
    kind = rng.integers(0, 3)
    if kind == 0:  # grain (fabric, concrete)
        gh, gw = max(2, h // 4), max(2, w // 4)
        tex = cv2.resize(
            rng.normal(0, 1, (gh, gw)).astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR
        )
        tex = tex * np.float32(rng.uniform(4, 14))
    elif kind == 1:  # stripes (wood, shelving)
        period = rng.uniform(0.04, 0.15) * min(h, w)
        angle = rng.uniform(0, math.pi)
        xs = np.arange(w, dtype=np.float32)[None, :] * np.float32(math.cos(angle) / period)
        ys = np.arange(h, dtype=np.float32)[:, None] * np.float32(math.sin(angle) / period)
        phase = xs + ys
        tex = np.sin(2 * math.pi * phase + rng.uniform(0, 6)).astype(np.float32) * rng.uniform(6, 20)
    else:  # tiles (shop floor, counter)
        cell = max(4, int(rng.uniform(0.06, 0.2) * min(h, w)))
        yy, xx = np.arange(h)[:, None], np.arange(w)[None, :]
        tex = (((yy // cell) + (xx // cell)) % 2).astype(np.float32) * np.float32(rng.uniform(10, 35))
        tex[(yy % cell == 0) | (xx % cell == 0)] -= 25
    bg = (base[None, None, :] + tex[:, :, None]) * light[:, :, None]
    return bg.astype(np.float32)


def _product_layers(product: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(colour float32 HxWx3, alpha float32 HxW) for a product image.

    Gray images (Fashion-MNIST: bright item on black) get an alpha from intensity; colour photos
    are pasted whole.
    """
    if product.ndim == 2 or (product.ndim == 3 and product.shape[2] == 1):
        g = product.reshape(product.shape[:2]).astype(np.float32)
        solid = cv2.dilate(g, np.ones((3, 3), np.uint8))
        alpha = np.clip(cv2.GaussianBlur(solid, (3, 3), 0) / 24.0, 0.0, 1.0)
        color = np.repeat(g[:, :, None], 3, axis=2)
        return color, alpha
    if product.ndim == 3 and product.shape[2] in (3, 4):
        color = product[:, :, :3].astype(np.float32)
        if product.shape[2] == 4:
            return color, product[:, :, 3].astype(np.float32) / 255.0
        return color, np.ones(product.shape[:2], np.float32)
    raise DataError(f"product image has unsupported shape {product.shape}")


def _motion_kernel(length: int, angle: float) -> np.ndarray:
    length = max(3, int(length) | 1)
    k = np.zeros((length, length), np.float32)
    k[length // 2, :] = 1.0
    rot = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), angle, 1.0)
    rotated = np.asarray(cv2.warpAffine(k, rot, (length, length)), np.float32)
    return rotated / max(float(rotated.sum()), 1e-6)


def render_scene(
    product: np.ndarray,
    rng: np.random.Generator,
    *,
    config: KioskConfig | None = None,
    size: tuple[int, int] | None = None,
    bad: str | None = None,
    tint: bool = True,
    encode: bool = True,
) -> Any:
    """Render one BGR uint8 frame of ``size`` (width, height) showing ``product``.

    ``bad`` is None for a good frame, or one of BAD_REASONS. The last step is a JPEG round trip
    at a random quality; with ``encode=False`` the frame before it and that quality are returned
    instead, so a writer can store the frame as a JPEG file of exactly that quality.
    """
    cfg = config or KioskConfig()
    w, h = size if size is not None else (cfg.width, cfg.height)
    if bad is not None and bad not in BAD_REASONS:
        raise UsageError(f"unknown bad-frame reason {bad!r}; choose one of {BAD_REASONS}")
    side = min(w, h)  # centre-crop side
    rel = side / _REF_SIDE
    frame = _background(rng, h, w)

    color, alpha = _product_layers(product)
    if tint:
        color = color * rng.uniform(0.55, 1.15, size=3).astype(np.float32)[None, None, :]
    psize = max(4, round(rng.uniform(*cfg.fill) * side))
    angle = rng.uniform(-cfg.max_rotation_deg, cfg.max_rotation_deg)
    cx = w / 2 + rng.uniform(-cfg.max_offset, cfg.max_offset) * side
    cy = h / 2 + rng.uniform(-cfg.max_offset, cfg.max_offset) * side
    ph, pw = color.shape[:2]
    scale = psize / max(ph, pw)
    m = cv2.getRotationMatrix2D((pw / 2, ph / 2), angle, scale)
    m[0, 2] += cx - pw / 2
    m[1, 2] += cy - ph / 2
    # warp only the bounding box of the rotated product, not the whole frame
    half = math.ceil(psize * 0.75) + 2
    x0, y0 = max(0, int(cx) - half), max(0, int(cy) - half)
    x1, y1 = min(w, int(cx) + half), min(h, int(cy) + half)
    if x1 > x0 and y1 > y0:
        m_local = m.copy()
        m_local[0, 2] -= x0
        m_local[1, 2] -= y0
        box = (x1 - x0, y1 - y0)
        pc = cv2.warpAffine(color, m_local, box, flags=cv2.INTER_LINEAR)
        pa = cv2.warpAffine(alpha, m_local, box, flags=cv2.INTER_LINEAR)[:, :, None]
        region = frame[y0:y1, x0:x1]
        region *= 1.0 - pa
        region += pa * pc
    # illumination
    gain = rng.uniform(*cfg.brightness)
    contrast = rng.uniform(*cfg.contrast)
    if bad == "dark":
        gain = rng.uniform(0.06, 0.16)
    elif bad == "overexposed":
        gain = rng.uniform(2.6, 4.0)
    mean = float(frame.mean())
    frame = (frame - mean) * contrast + mean
    frame *= gain
    if bad == "overexposed":
        frame += rng.uniform(40, 90)
    # optics
    if bad == "blur":
        # out of focus, often with camera shake on top
        frame = cv2.GaussianBlur(frame, (0, 0), rng.uniform(5.0, 9.0) * rel)
        if rng.random() < 0.5:
            frame = cv2.filter2D(
                frame, -1, _motion_kernel(int(rng.uniform(20, 40) * rel), rng.uniform(0, 180))
            )
    else:
        s = rng.uniform(*cfg.blur_sigma) * rel
        if s > 0.3:
            frame = cv2.GaussianBlur(frame, (0, 0), s)
        if rng.random() < cfg.motion_blur_prob:
            frame = cv2.filter2D(frame, -1, _motion_kernel(int(rng.uniform(3, 7) * rel), rng.uniform(0, 180)))
    # sensor
    ns = rng.uniform(*cfg.noise_sigma)
    if ns > 0.5:
        frame += rng.standard_normal(size=frame.shape, dtype=np.float32) * np.float32(ns)
    out = np.clip(frame, 0, 255).astype(np.uint8)
    q = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
    if not encode:
        return out, q
    ok, enc = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, q])
    return cv2.imdecode(enc, cv2.IMREAD_COLOR) if ok else out


def _frame_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(index)])


def plan_frames(
    n_frames: int, n_products: int, *, seed: int, bad_fraction: float, segment: int = 1
) -> Iterator[tuple[int, int, str | None, int]]:
    """Yield (frame index, product index, bad reason, segment id) for every frame.

    With ``segment`` > 1 (video), consecutive frames share the product and the bad reason.
    """
    if n_products <= 0:
        raise DataError("no product images to render; the source dataset is empty")
    seg = max(1, int(segment))
    for i in range(n_frames):
        s = i // seg
        rng = np.random.default_rng([int(seed), 1_000_003, s])
        product = int(rng.integers(0, n_products))
        bad = BAD_REASONS[int(rng.integers(0, 3))] if rng.random() < bad_fraction else None
        yield i, product, bad, s


def iter_kiosk_frames(
    products: Sequence[np.ndarray],
    labels: Sequence[int],
    n_frames: int,
    *,
    seed: int = 0,
    config: KioskConfig | None = None,
) -> Iterator[tuple[np.ndarray, int, str]]:
    """Yield (frame, label, bad reason) in memory, frame by frame: the same frames, for the same
    seed, that ``generate_kiosk`` would write as files (before JPEG file encoding)."""
    cfg = config or KioskConfig()
    for i, pidx, bad, _ in plan_frames(n_frames, len(products), seed=seed, bad_fraction=cfg.bad_fraction):
        yield (
            render_scene(products[pidx], _frame_rng(seed, i), config=cfg, bad=bad),
            int(labels[pidx]),
            bad or "",
        )


def _segment_rng(seed: int, segment: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), 2_000_003, int(segment)])


def generate_kiosk(
    out_dir: str | os.PathLike[str],
    products: Sequence[np.ndarray],
    labels: Sequence[int],
    label_names: Sequence[str],
    *,
    n_frames: int,
    seed: int = 0,
    config: KioskConfig | None = None,
    video: bool = False,
    fps: float = 15.0,
    segment_frames: int = 30,
    overwrite: bool = False,
    source: str = "",
    progress: bool = False,
) -> list[KioskFrameInfo]:
    """Render ``n_frames`` kiosk frames into ``out_dir`` (JPEG files, or one MJPG video).

    Writes ``ground_truth.csv`` (one row per frame: label, bad-frame reason) last and atomically,
    so a directory without it was interrupted and is refused by the reader.
    """
    cfg = config or KioskConfig()
    if n_frames <= 0:
        raise UsageError(f"number of frames must be > 0, got {n_frames}")
    if len(products) != len(labels):
        raise DataError(f"{len(products)} products but {len(labels)} labels")
    final = Path(out_dir)
    with output_lock(final):
        out = stage_output_dir(final, overwrite=overwrite)
        try:
            infos = _render_into(out, products, labels, label_names, n_frames=n_frames, seed=seed, cfg=cfg,
                                 video=video, fps=fps, segment_frames=segment_frames, source=source,
                                 progress=progress)  # fmt: skip
            publish_output_dir(out, final, command="data kiosk")
        except BaseException:
            remove_path(out)
            raise
    return infos


def _render_into(
    out: Path, products: Sequence[np.ndarray], labels: Sequence[int], label_names: Sequence[str], *,
    n_frames: int, seed: int, cfg: KioskConfig, video: bool, fps: float, segment_frames: int, source: str,
    progress: bool,
) -> list[KioskFrameInfo]:  # fmt: skip
    seg = segment_frames if video else 1
    plan = list(plan_frames(n_frames, len(products), seed=seed, bad_fraction=cfg.bad_fraction, segment=seg))
    infos: list[KioskFrameInfo] = []
    writer = None
    if video:
        writer = cv2.VideoWriter(
            str(out / VIDEO_NAME), cv2.VideoWriter.fourcc(*"MJPG"), fps, (cfg.width, cfg.height)
        )
        if not writer.isOpened():
            raise DataError(f"cannot open a video writer for {out / VIDEO_NAME}")
    else:
        (out / "frames").mkdir(exist_ok=True)
    bar = _progress(progress, "rendering kiosk frames", len(plan))
    try:
        for i, pidx, bad, s in plan:
            if writer is not None:
                # a segment keeps its scene (same seed); per-frame seeds add small hand jitter
                scene_seed = int(_segment_rng(seed, s).integers(0, 2**31))
                frame = render_scene(products[pidx], np.random.default_rng(scene_seed), config=cfg, bad=bad)
                dx, dy = _frame_rng(seed, i).integers(-3, 4, size=2)
                writer.write(np.roll(frame, (int(dy), int(dx)), axis=(0, 1)))
                name = f"{VIDEO_NAME}#{i}"
            else:
                raw, quality = render_scene(
                    products[pidx], _frame_rng(seed, i), config=cfg, bad=bad, encode=False
                )
                name = f"frames/{i:06d}.jpg"
                if not cv2.imwrite(str(out / name), raw, [cv2.IMWRITE_JPEG_QUALITY, quality]):
                    raise DataError(f"cannot write {out / name}; is the disk full?")
            lab = int(labels[pidx])
            infos.append(KioskFrameInfo(i, lab, str(label_names[lab]), bad or "", pidx, s, name))
            bar.advance()
    finally:
        if writer is not None:
            writer.release()
        bar.close()
    atomic_write_text(out / "labels.txt", "\n".join(label_names) + "\n", overwrite=True)
    meta = {
        "generator": "shoplens.data.kiosk",
        "seed": seed,
        "n_frames": n_frames,
        "video": video,
        "fps": fps if video else None,
        "segment_frames": seg,
        "source": source,
        "config": asdict(cfg),
    }
    atomic_write_text(out / "meta.json", json.dumps(meta, indent=2) + "\n", overwrite=True)
    rows = ["index,file,label,label_name,bad_reason,source_index,segment"]
    for f in infos:
        rows.append(_csv_row(f))
    atomic_write_text(out / GROUND_TRUTH_CSV, "\n".join(rows) + "\n", overwrite=True)
    return infos


def _csv_row(f: KioskFrameInfo) -> str:
    import io

    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(
        [f.index, f.file, f.label, f.label_name, f.bad_reason, f.source_index, f.segment]
    )
    return buf.getvalue()
