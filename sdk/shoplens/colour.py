"""The colour of the product in the frame, named from a shopping palette (``colours`` on results).

Measured on the crop the model saw, at model size (``FrameView.resized``: no second resize of the
camera frame), shrunk to ``GRID`` x ``GRID`` cells:

1. **Light.** Optional white-balance gains (fixed for a calibrated camera, or a running gray-world
   estimate over a stream's frames, :class:`WhiteBalance`; a channel the camera clipped, at least
   ``CLIPPED`` in a cell, is raised to the cell's brightest channel after the gains, so a white
   highlight stays white), then exposure: a crop darker than
   ``DIM_MEAN`` (mean of its sRGB values) is brightened to ``EXPOSED_MEAN`` (at most x2.5), as a
   camera's auto-exposure would have.
2. **Product, not background.** The crop's outer ring (``RING`` cells) is taken as background:
   kiosk and shopper photos centre one item on a plain or textured surface. A cell is product when
   its CIELAB colour is farther from the ring's mean than ``BACKGROUND_DELTA_E`` and than 1.5 times
   the ring's own spread (CIE76, lightness at half weight, so shading and texture do not count).
   When fewer than ``MIN_PRODUCT_SHARE`` of the cells qualify (a product the colour of its
   background), the central cells are used.
3. **Clusters and names.** Each product cell joins the cluster of its palette colour: a cell whose
   chroma C* is under ``ACHROMATIC_CHROMA`` is black (L* < 30), white (L* > 78) or gray, never a
   hue; any other cell takes the nearest chromatic reference under CMC(2:1), the colour difference
   the textile trade uses (lightness at half weight). Each cluster reports its share of the product
   cells and its mean CIELAB colour; clusters under ``MIN_SHARE`` are dropped; dominant first.

Steps 2 and 3 run as one compiled call when numba is installed (``shoplens[colour]``,
:mod:`shoplens._colour_kernel`), else as numpy calls over all cells at once; the answers are the
same (:func:`colour_engine` says which runs).

Limits (docs/sdk.md): a single photo under coloured light is named as it looks (a white shirt
under warm light reads beige); in a stream, ``white_balance="auto"`` removes the cast once it has
seen ``WhiteBalance.MIN_FRAMES`` frames of varied scenes. A product the colour of its background
falls back to the centre of the crop; a background pattern that reaches the centre can be read as
product; light and dark variants (blue and navy, orange and brown) are told apart by lightness, so
exposure matters.
"""

from __future__ import annotations

import functools
import os
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from shoplens.errors import UsageError

__all__ = [
    "ACHROMATIC",
    "CHROMATIC",
    "PALETTE",
    "ColourOptions",
    "ProductColour",
    "WhiteBalance",
    "colour_engine",
    "colours_of",
    "name_lab",
    "prepare_colour_names",
    "product_colours",
    "reference_lab",
]

# name -> sRGB reference (R, G, B); black, gray and white are named by lightness, not by nearness
CHROMATIC: dict[str, tuple[int, int, int]] = {
    "red": (200, 30, 40),
    "orange": (240, 130, 30),
    "yellow": (240, 215, 40),
    "green": (40, 150, 60),
    "teal": (0, 130, 130),
    "blue": (25, 80, 235),
    "navy": (20, 25, 90),
    "purple": (130, 40, 150),
    "pink": (240, 130, 170),
    "brown": (120, 70, 35),
    "beige": (215, 195, 160),
}
ACHROMATIC = ("black", "gray", "white")
PALETTE = (*ACHROMATIC, *CHROMATIC)

GRID = 16
RING = 2
DIM_MEAN = 0.30
EXPOSED_MEAN = 0.45
MAX_EXPOSURE_GAIN = 2.5
BACKGROUND_DELTA_E = 14.0
MIN_PRODUCT_SHARE = 0.06
ACHROMATIC_CHROMA = 12.0
BLACK_BELOW_L = 30.0
WHITE_ABOVE_L = 78.0
MIN_SHARE = 0.10
CLIPPED = 245  # a channel this bright in a cell was (partly) clipped by the camera
BLEND_MIN_CHROMA = 20.0
BLEND_COS = 0.94  # within 20 degrees of the background's hue
BLEND_CHROMA_SHARE = 0.8
BLEND_KEEP = 0.25
CMC_L, CMC_C = 2.0, 1.0


@dataclass(frozen=True)
class ProductColour:
    """A named colour of the product, its share of the product's cells (0-1) and its mean CIELAB."""

    name: str
    share: float
    lab: tuple[float, float, float]

    @property
    def hex(self) -> str:
        """The cluster's mean colour as sRGB ``#rrggbb`` (for a swatch on screen)."""
        px = cv2.cvtColor(np.array([[self.lab]], np.float32), cv2.COLOR_Lab2RGB)[0, 0]
        r, g, b = (round(float(np.clip(v, 0, 1)) * 255) for v in px)
        return f"#{r:02x}{g:02x}{b:02x}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "share": round(self.share, 3), "lab": [round(v, 1) for v in self.lab],
                "hex": self.hex}  # fmt: skip


def _lab(rgb: tuple[int, int, int]) -> np.ndarray:
    px = np.array([[[rgb[2], rgb[1], rgb[0]]]], np.float32) / 255.0
    return np.asarray(cv2.cvtColor(px, cv2.COLOR_BGR2Lab)[0, 0], np.float32)


def reference_lab(name: str) -> np.ndarray:
    """The CIELAB reference of a palette name (achromatic names: a lightness, no chroma)."""
    if name in CHROMATIC:
        return _lab(CHROMATIC[name])
    if name not in ACHROMATIC:
        raise UsageError(f"unknown colour {name!r}; the palette: {', '.join(PALETTE)}")
    return np.array([{"black": 15.0, "gray": 55.0, "white": 92.0}[name], 0.0, 0.0], np.float32)


class _Cmc:
    """CMC(l:c) distances from samples to the chromatic references (the references are the
    standards, so every weighting term is computed once)."""

    def __init__(self, refs: np.ndarray, k_l: float, k_c: float) -> None:
        L1, a1, b1 = refs[:, 0], refs[:, 1], refs[:, 2]
        C1 = np.hypot(a1, b1)
        H1 = np.degrees(np.arctan2(b1, a1)) % 360
        cos = np.cos(np.radians(H1 + np.where((H1 >= 164) & (H1 <= 345), 168, 35)))
        t = np.where((H1 >= 164) & (H1 <= 345), 0.56 + np.abs(0.2 * cos), 0.36 + np.abs(0.4 * cos))
        f = np.sqrt(C1**4 / (C1**4 + 1900))
        sl = np.where(L1 < 16, 0.511, 0.040975 * L1 / (1 + 0.01765 * L1))
        sc = 0.0638 * C1 / (1 + 0.0131 * C1) + 0.638
        sh = sc * (f * t + 1 - f)
        self.refs = refs.astype(np.float32)
        self.c1 = C1.astype(np.float32)
        self.wl = (1 / (k_l * sl) ** 2).astype(np.float32)
        self.wc = (1 / (k_c * sc) ** 2).astype(np.float32)
        self.wh = (1 / sh**2).astype(np.float32)

    def nearest(self, lab: np.ndarray, chroma: np.ndarray) -> np.ndarray:
        d_l = self.refs[None, :, 0] - lab[:, 0:1]
        d_c = self.c1[None, :] - chroma[:, None]
        d_ab = (self.refs[None, :, 1] - lab[:, 1:2]) ** 2 + (self.refs[None, :, 2] - lab[:, 2:3]) ** 2
        d_h2 = np.maximum(d_ab - d_c**2, 0.0)
        best: np.ndarray = np.argmin(d_l**2 * self.wl + d_c**2 * self.wc + d_h2 * self.wh, axis=1)
        return best


_CMC = _Cmc(np.stack([_lab(v) for v in CHROMATIC.values()]), CMC_L, CMC_C)
_NAMES = (*ACHROMATIC, *CHROMATIC)


def _names(lab: np.ndarray) -> np.ndarray:
    """Palette index of each CIELAB row (0-2: black, gray, white; then the chromatic names)."""
    chroma = np.hypot(lab[:, 1], lab[:, 2])
    light = lab[:, 0]
    grey = np.where(light < BLACK_BELOW_L, 0, np.where(light > WHITE_ABOVE_L, 2, 1))
    return np.where(chroma < ACHROMATIC_CHROMA, grey, 3 + _CMC.nearest(lab, chroma))


# The naming table: _names of every 8-bit CIELAB colour (OpenCV's encoding: L* x 2.55, a* + 128,
# b* + 128) on a grid of 2 codes, built once (0.2 s), so naming a frame's cells is one lookup each.
_lut: np.ndarray | None = None
_SHIFT = 1


def _table() -> np.ndarray:
    """The naming table, flat: index ``(L8 >> s) * side**2 + (a8 >> s) * side + (b8 >> s)``."""
    global _lut
    if _lut is None:
        step = 1 << _SHIFT
        codes = np.arange(0, 256, step, dtype=np.float32) + (step - 1) / 2
        grid = np.stack(np.meshgrid(codes / 2.55, codes - 128, codes - 128, indexing="ij"), axis=-1)
        grid = grid.reshape(-1, 3).astype(np.float32)
        names = np.concatenate([_names(grid[s : s + 65536]) for s in range(0, len(grid), 65536)])
        _lut = names.astype(np.uint8)
    return _lut


def prepare_colour_names() -> None:
    """Build the naming table and load the colour step now (a task with colours on calls this when
    it is created, so the first frame does not pay for it)."""
    _table()
    colour_engine()


def name_lab(lab: Sequence[float] | np.ndarray) -> str:
    """The palette name of one CIELAB colour (exact, without the table)."""
    return _NAMES[int(_names(np.asarray(lab, np.float32).reshape(1, 3))[0])]


def _layout(grid: int, ring: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per cell (flat): ring weights (1 / ring size on the outer ring), inner and centre masks."""
    yy, xx = np.mgrid[:grid, :grid]
    edge = np.minimum(np.minimum(yy, xx), np.minimum(grid - 1 - yy, grid - 1 - xx)).ravel()
    ring_w = (edge < ring).astype(np.float32)
    return ring_w / ring_w.sum(), edge >= ring, edge >= grid // 4


_RING_W, _INNER, _CENTRE = _layout(GRID, RING)
_MIN_PRODUCT = MIN_PRODUCT_SHARE * int(_INNER.sum())
_N_CENTRE = int(_CENTRE.sum())
# The cells' features, a row per feature and a column per cell: OpenCV's 8-bit CIELAB (L8 = L* x
# 2.55, a8 = a* + 128, b8 = b* + 128), their squares, the codes shifted for the naming table, and
# 1. One product with a 4 x 10 matrix made per frame gives, for every cell at once, its distance to
# the background, its dot product with the background's hue, its chroma squared (exact: integers)
# and its naming-table index: one call instead of a dozen.
_W_L = 0.25 / 2.55**2  # squared CIE76 weight of L8: lightness at half weight
_SIDE = 256 >> _SHIFT  # the naming table's grid: one flat index per cell, exact in float32
_M = np.zeros((4, 10), np.float32)
_M[0, 3:6] = (_W_L, 1.0, 1.0)  # distance: sum w (x - mu)^2 (the mu terms set per frame)
_M[2, [1, 2, 4, 5, 9]] = (-256.0, -256.0, 1.0, 1.0, 32768.0)  # (a8 - 128)^2 + (b8 - 128)^2
_M[3, 6:9] = (_SIDE * _SIDE, _SIDE, 1.0)  # naming-table index


def shrink(resized: np.ndarray) -> np.ndarray:
    """The crop as ``GRID`` x ``GRID`` x 3 uint8 (alpha dropped, gray expanded, float scaled)."""
    small = cv2.resize(resized, (GRID, GRID), interpolation=cv2.INTER_LINEAR)
    if small.dtype != np.uint8:
        small = cv2.convertScaleAbs(small, alpha=255.0)  # float frames are in [0, 1]
    if small.ndim == 2:
        return cv2.cvtColor(small, cv2.COLOR_GRAY2BGR)
    if small.shape[2] == 4:
        return cv2.cvtColor(small, cv2.COLOR_BGRA2BGR)
    return small


def product_colours(
    resized: np.ndarray, *, rgb: bool = False, gains: np.ndarray | None = None
) -> tuple[ProductColour, ...]:
    """The named colours of the product in a crop (uint8, or float in [0, 1]; BGR, RGB or BGRA;
    ``gains``: white-balance multipliers in the crop's channel order), dominant first."""
    return _colours(shrink(resized), rgb, gains)


def colours_of(
    resized: np.ndarray, white_balance: WhiteBalance, *, rgb: bool = False
) -> tuple[ProductColour, ...]:
    """:func:`product_colours` with a task's :class:`WhiteBalance` (which observes the frame)."""
    small = shrink(resized)
    return _colours(small, rgb, white_balance.gains(small))


_kernel: Any = None  # the compiled step (numba), once colour_engine has loaded it
_engine: str | None = None


def colour_engine() -> str:
    """``"numba"`` when the colour step runs as one compiled call (``pip install 'shoplens[colour]'``),
    else ``"numpy"`` (the same answers, about 4x the time in a camera loop). The environment
    variable ``SHOPLENS_COLOUR_ENGINE=numpy`` chooses numpy although numba is installed."""
    global _kernel, _engine
    if _engine is None:
        kernel = None
        if os.environ.get("SHOPLENS_COLOUR_ENGINE", "").lower() != "numpy":
            try:
                from shoplens._colour_kernel import cluster_sums
            except ImportError as e:  # numba absent, or one that does not fit this numpy
                if (e.name or "").split(".")[0] not in ("numba", "llvmlite"):
                    warnings.warn(f"product colour runs on numpy: numba is unusable here ({e})", stacklevel=2)
            else:  # the fixed arguments bound once; a frame passes only its cells
                kernel = functools.partial(
                    cluster_sums, _table(), _INNER, _CENTRE, _MIN_PRODUCT, _SHIFT, _SIDE, len(_NAMES)
                )
                kernel(np.zeros((GRID * GRID, 3), np.uint8))  # compiles, or loads the cached machine code
        _kernel, _engine = kernel, ("numba" if kernel is not None else "numpy")
    return _engine


def _lab_cells(small: np.ndarray, rgb: bool, gains: np.ndarray | None) -> np.ndarray:
    """Light (white balance, then exposure), then the cells' 8-bit CIELAB, one row per cell."""
    if gains is not None:
        balanced = cv2.multiply(small, (float(gains[0]), float(gains[1]), float(gains[2]), 0.0))  # saturates
        if small.max() >= CLIPPED:
            # a channel the camera clipped was at least as bright as it reads: after the gains it is
            # raised to the cell's brightest channel, so a white highlight under warm light stays
            # white instead of turning cyan where red was clipped and then scaled down
            clipped = small >= CLIPPED
            balanced[clipped] = np.broadcast_to(balanced.max(axis=2, keepdims=True), balanced.shape)[clipped]
        small = balanced
    m = cv2.mean(small)
    mean = (m[0] + m[1] + m[2]) / 765.0
    if mean < DIM_MEAN:
        small = cv2.convertScaleAbs(small, alpha=min(EXPOSED_MEAN / max(mean, 1e-3), MAX_EXPOSURE_GAIN))
    lab: np.ndarray = cv2.cvtColor(small, cv2.COLOR_RGB2LAB if rgb else cv2.COLOR_BGR2LAB).reshape(-1, 3)
    return lab


def _colours(small: np.ndarray, rgb: bool, gains: np.ndarray | None) -> tuple[ProductColour, ...]:
    lab = _lab_cells(small, rgb, gains)
    if _engine is None:
        colour_engine()
    if _kernel is None:
        return _colours_numpy(lab)
    sums, n_product = _kernel(lab)
    return _clusters(sums[:, 0].tolist(), int(n_product), lambda i: sums[i, 1:].tolist())


def _clusters(
    counts: Sequence[float], n_product: int, lab_sums: Callable[[int], list[float]]
) -> tuple[ProductColour, ...]:
    """The named clusters over ``MIN_SHARE`` of the product's cells, dominant first (``lab_sums``:
    a name's sums of L8, a8 and b8 over its cells)."""
    least = MIN_SHARE * n_product
    out = []
    for i, c in enumerate(counts):
        if c and c >= least:
            s_l, s_a, s_b = lab_sums(i)
            out.append(
                ProductColour(_NAMES[i], c / n_product, (s_l / c / 2.55, s_a / c - 128.0, s_b / c - 128.0))
            )
    if len(out) > 1:
        out.sort(key=lambda c: -c.share)
    return tuple(out)


def _colours_numpy(lab: np.ndarray) -> tuple[ProductColour, ...]:
    # the steps of _colour_kernel.cluster_sums on all 256 cells at once, in about 25 numpy calls:
    # most of a frame's cost is call overhead, not arithmetic, so the steps share one matrix product
    f = np.empty((10, len(lab)), np.float32)
    f[0:3] = lab.T
    np.multiply(f[0:3], f[0:3], out=f[3:6])
    f[6:9] = np.right_shift(lab, _SHIFT).T
    f[9] = 1.0
    # the background: the ring's mean and mean square per channel, and its spread around the mean
    mu_l, mu_a, mu_b, sq_l, sq_a, sq_b = (f[0:6] @ _RING_W).tolist()
    mu2 = _W_L * mu_l * mu_l + mu_a * mu_a + mu_b * mu_b
    spread2 = _W_L * sq_l + sq_a + sq_b - mu2
    ma, mb = mu_a - 128.0, mu_b - 128.0
    w = _M.copy()
    w[0, 0], w[0, 1], w[0, 2], w[0, 9] = -2.0 * _W_L * mu_l, -2.0 * mu_a, -2.0 * mu_b, mu2
    # ma (a8 - 128) + mb (b8 - 128), a hair under (so an achromatic cell is never "near a hue")
    w[1, 1], w[1, 2], w[1, 9] = ma, mb, -128.0 * (ma + mb) - 1e-3
    r = w @ f
    product = (r[0] > max(BACKGROUND_DELTA_E**2, 2.25 * spread2)) & _INNER
    n_product = int(np.count_nonzero(product))
    if n_product < _MIN_PRODUCT:
        product, n_product = _CENTRE, _N_CENTRE
    bg_chroma = (ma * ma + mb * mb) ** 0.5
    if bg_chroma > BLEND_MIN_CHROMA:  # cells that mix the background into a see-through or edge cell
        # within 20 degrees of the background's hue (a dot product over cos 20 deg of both chromas)
        # and under 80 % of its chroma
        c2 = r[2]
        blend = (r[1] > (BLEND_COS * bg_chroma) * np.sqrt(c2)) & (c2 < (BLEND_CHROMA_SHARE * bg_chroma) ** 2)
        blend &= product
        n_blend = int(np.count_nonzero(blend))
        if n_product - n_blend >= BLEND_KEEP * n_product:
            product, n_product = product ^ blend, n_product - n_blend
    names = _table()[r[3].astype(np.intp)]
    counts = np.bincount(names[product], minlength=len(_NAMES)).tolist()

    def lab_sums(i: int) -> list[float]:
        sel = product if counts[i] == n_product else product & (names == i)
        sums: list[float] = (f[0:3] @ sel.astype(np.float32)).tolist()
        return sums

    return _clusters(counts, n_product, lab_sums)


@dataclass(frozen=True)
class ColourOptions:
    """The product's colour on every result (off by default: the frame then costs nothing more).

    Args:
      enabled: name the product's colours (``result.colours``).
      white_balance: None (the camera's own), ``"auto"`` (a running gray-world estimate over the
        frames this task sees; for kiosk streams of varied scenes) or three gains in the frames'
        channel order (a calibrated camera).
    """

    enabled: bool = False
    white_balance: str | tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise UsageError(f"colour enabled must be True or False, got {self.enabled!r}")
        WhiteBalance(self.white_balance)  # validates


class WhiteBalance:
    """White-balance gains for a camera: fixed, or estimated from the frames a task sees.

    ``"auto"`` keeps a running gray-world estimate (the mean colour of many different scenes is
    neutral; an exponential average over about ``WINDOW`` frames) and applies it once it has seen
    ``MIN_FRAMES`` frames. Good for a kiosk whose camera and light are fixed and whose scenes vary;
    wrong for a camera that always sees the same coloured surface (give fixed gains then).
    """

    WINDOW = 200  # chosen on the tuning seeds (1, 2): gray named achromatic 96.2 -> 99.0 % (warm, seed 1)
    MIN_FRAMES = 30

    def __init__(self, setting: str | Sequence[float] | None) -> None:
        self.auto = setting == "auto"
        self._lock = threading.Lock()
        self._sum = np.zeros(3, np.float64)
        self._weight = 0.0
        self._frames = 0
        self._fixed: np.ndarray | None = None
        if setting is not None and not self.auto:
            if isinstance(setting, str):
                raise UsageError(f"white_balance must be 'auto', three gains or None, got {setting!r}")
            g = np.asarray(setting, np.float32).reshape(-1)
            if g.shape != (3,) or not np.all(np.isfinite(g)) or np.any(g <= 0):
                raise UsageError(f"white-balance gains must be three positive numbers, got {list(setting)}")
            self._fixed = g

    def gains(self, small: np.ndarray) -> np.ndarray | None:
        """The gains for this frame (``small``: the shrunk uint8 crop), after observing it."""
        if self._fixed is not None:
            return self._fixed
        if not self.auto:
            return None
        decay = 1.0 - 1.0 / self.WINDOW
        with self._lock:
            self._sum = self._sum * decay + np.asarray(cv2.mean(small)[:3]) / 255.0
            self._weight = self._weight * decay + 1.0
            self._frames += 1
            if self._frames < self.MIN_FRAMES:
                return None
            m = self._sum / self._weight
        gains: np.ndarray = (m.mean() / np.maximum(m, 1e-3)).astype(np.float32)
        return gains
