"""The colour step of :mod:`shoplens.colour` as one compiled call (numba, ``shoplens[colour]``).

Only :mod:`shoplens.colour` imports this module, and only when numba is installed; without it the
same step runs as numpy calls, with the same answers (``tests/test_colour.py`` compares both on
real crops). The numpy path costs about 25 calls per frame, and in a camera loop each call costs
2-10 us cold, so there the call overhead is the cost; here it is one call. Compiled once per
machine (about 2 s, cached beside this file or in the user's cache directory) and loaded from
that cache afterwards, when a task with colours is created (about 1 s with numba's import and the
naming table).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from shoplens.colour import (
    _W_L,
    BACKGROUND_DELTA_E,
    BLEND_CHROMA_SHARE,
    BLEND_COS,
    BLEND_KEEP,
    BLEND_MIN_CHROMA,
)

_BG2 = BACKGROUND_DELTA_E**2


@njit(cache=True, nogil=True)
def cluster_sums(
    table: np.ndarray, inner: np.ndarray, centre: np.ndarray, min_product: float, shift: int, side: int,
    n_names: int, lab: np.ndarray,
) -> tuple[np.ndarray, int]:  # fmt: skip
    """Per palette name: (cells, sum L8, sum a8, sum b8) over the product's cells, and their count.

    ``lab``: the cells' 8-bit CIELAB (n x 3 uint8), last so that the fixed arguments can be bound
    once; ``table``: the naming table; ``inner`` and ``centre``: cell masks (the ring is every cell
    not inner). The steps of ``colour._colours_numpy``.
    """
    n = lab.shape[0]
    s_l = s_a = s_b = q_l = q_a = q_b = 0.0
    n_ring = 0
    for i in range(n):  # the background: the ring's mean and spread
        if not inner[i]:
            v_l, v_a, v_b = float(lab[i, 0]), float(lab[i, 1]), float(lab[i, 2])
            s_l += v_l
            s_a += v_a
            s_b += v_b
            q_l += v_l * v_l
            q_a += v_a * v_a
            q_b += v_b * v_b
            n_ring += 1
    mu_l, mu_a, mu_b = s_l / n_ring, s_a / n_ring, s_b / n_ring
    mu2 = _W_L * mu_l * mu_l + mu_a * mu_a + mu_b * mu_b
    threshold = max(_BG2, 2.25 * ((_W_L * q_l + q_a + q_b) / n_ring - mu2))
    product = np.zeros(n, np.bool_)
    n_product = 0
    for i in range(n):  # product: inner cells far from the background
        if inner[i]:
            d_l, d_a, d_b = float(lab[i, 0]) - mu_l, float(lab[i, 1]) - mu_a, float(lab[i, 2]) - mu_b
            if _W_L * d_l * d_l + d_a * d_a + d_b * d_b > threshold:
                product[i] = True
                n_product += 1
    if n_product < min_product:  # a product the colour of its background: the centre
        n_product = 0
        for i in range(n):
            product[i] = centre[i]
            n_product += int(centre[i])
    m_a, m_b = mu_a - 128.0, mu_b - 128.0
    bg_chroma = (m_a * m_a + m_b * m_b) ** 0.5
    if bg_chroma > BLEND_MIN_CHROMA:  # cells that mix the background in: near its hue, less chroma
        blend = np.zeros(n, np.bool_)
        n_blend = 0
        limit = (BLEND_CHROMA_SHARE * bg_chroma) ** 2
        for i in range(n):
            if product[i]:
                c_a, c_b = float(lab[i, 1]) - 128.0, float(lab[i, 2]) - 128.0
                c2 = c_a * c_a + c_b * c_b
                if m_a * c_a + m_b * c_b - 1e-3 > BLEND_COS * bg_chroma * c2**0.5 and c2 < limit:
                    blend[i] = True
                    n_blend += 1
        if n_product - n_blend >= BLEND_KEEP * n_product:
            for i in range(n):
                if blend[i]:
                    product[i] = False
            n_product -= n_blend
    sums = np.zeros((n_names, 4))
    for i in range(n):  # each product cell joins its palette name's cluster
        if product[i]:
            v_l, v_a, v_b = int(lab[i, 0]), int(lab[i, 1]), int(lab[i, 2])
            k = table[(v_l >> shift) * side * side + (v_a >> shift) * side + (v_b >> shift)]
            sums[k, 0] += 1.0
            sums[k, 1] += v_l
            sums[k, 2] += v_a
            sums[k, 3] += v_b
    return sums, n_product
