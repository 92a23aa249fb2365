"""A labelled colour test set from real images: Fashion-MNIST items in known colours in kiosk scenes.

Each item is a Fashion-MNIST product (its gray shading kept as a mild shade, its shape as the alpha
mask), painted in one of the palette's chromatic colours (jittered in hue, chroma and lightness
around the reference) or left gray, and rendered by the kiosk scene generator (textured
background, pose, blur, noise, JPEG) under a named light:

* ``normal``: exposure 0.85-1.15, the camera's white balance right;
* ``dim``: exposure 0.40-0.60 (half the light, the camera not compensating);
* ``warm``: tungsten-ish light under a daylight white balance: red x1.12, blue x0.80.

The truth is the colour's name (``gray`` items: any achromatic name is right). The frames are made
on the fly, reproducibly from the seed; nothing is stored.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from shoplens.colour import CHROMATIC, reference_lab
from shoplens.data.kiosk import KioskConfig, render_scene
from shoplens.errors import UsageError

__all__ = ["CONDITIONS", "ColourSample", "colour_samples", "paint"]

CONDITIONS = {
    "normal": ((0.85, 1.15), (1.0, 1.0, 1.0)),
    "dim": ((0.40, 0.60), (1.0, 1.0, 1.0)),
    "warm": ((0.85, 1.15), (0.80, 1.0, 1.12)),  # B, G, R gains
}


@dataclass(frozen=True)
class ColourSample:
    frame: np.ndarray  # BGR uint8
    truth: str  # a palette name, or "gray" for an uncoloured item (any achromatic name is right)
    condition: str


def paint(gray: np.ndarray, name: str, rng: np.random.Generator) -> np.ndarray:
    """A BGRA product image: the palette colour ``name`` (jittered in hue +-6 degrees, chroma
    +-15 %, lightness +-5), shaded by the item's gray levels, its alpha from their intensity."""
    L, a, b = (float(x) for x in reference_lab(name))
    chroma, hue = float(np.hypot(a, b)), float(np.arctan2(b, a))
    hue += np.deg2rad(rng.uniform(-6, 6))
    chroma *= rng.uniform(0.85, 1.15)
    L = float(np.clip(L + rng.uniform(-5, 5), 3, 97))
    px = np.array([[[L, chroma * np.cos(hue), chroma * np.sin(hue)]]], np.float32)
    bgr = cv2.cvtColor(px, cv2.COLOR_Lab2BGR)[0, 0] * 255.0
    g = gray.astype(np.float32)
    shade = 0.8 + 0.2 * (g / 255.0)  # keep the item's folds, not its dark patches
    colour = np.clip(bgr[None, None, :] * shade[:, :, None], 0, 255)
    solid = cv2.dilate(g, np.ones((3, 3), np.uint8))
    alpha = np.clip(cv2.GaussianBlur(solid, (3, 3), 0) / 24.0, 0.0, 1.0) * 255.0
    return np.dstack([colour, alpha]).astype(np.uint8)


def colour_samples(
    n: int, condition: str, *, seed: int = 0, gray_share: float = 0.2, size: tuple[int, int] = (640, 480)
) -> Iterator[ColourSample]:
    """``n`` labelled frames under ``condition`` (a key of :data:`CONDITIONS`)."""
    from shoplens.data.fashion_mnist import load_fashion_mnist

    if condition not in CONDITIONS:
        raise UsageError(f"unknown light {condition!r}; choose one of {', '.join(CONDITIONS)}")
    (lo, hi), gains = CONDITIONS[condition]
    cfg = KioskConfig(width=size[0], height=size[1], brightness=(lo, hi), bad_fraction=0.0)
    x, _ = load_fashion_mnist("test")
    names = list(CHROMATIC)
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        item = x[int(rng.integers(0, len(x)))]
        if rng.random() < gray_share:
            truth = "gray"
            product: np.ndarray = item  # the gray item itself, alpha from its intensity
        else:
            truth = names[int(rng.integers(0, len(names)))]
            product = paint(item, truth, rng)
        frame, q = render_scene(product, rng, config=cfg, tint=False, encode=False)
        lit = np.clip(frame.astype(np.float32) * np.asarray(gains, np.float32), 0, 255).astype(np.uint8)
        ok, enc = cv2.imencode(".jpg", lit, [cv2.IMWRITE_JPEG_QUALITY, q])
        decoded = cv2.imdecode(enc, cv2.IMREAD_COLOR) if ok else None
        yield ColourSample(lit if decoded is None else np.asarray(decoded), truth, condition)
