"""The one preprocessing implementation, checked against a slow, obvious reference."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from shoplens.contract import PreprocessContract
from shoplens.errors import DataError, InvalidFrameError, UsageError
from shoplens.preprocess import InputQuantization, Preprocessor, crop_box, preprocess, preprocess_batch


def _reference(frame_bgr: np.ndarray, c: PreprocessContract) -> np.ndarray:
    """Straightforward float pipeline: crop, colour, resize, normalize."""
    x0, y0, w, h = crop_box(frame_bgr.shape[:2], c)
    crop = frame_bgr[y0 : y0 + h, x0 : x0 + w]
    small = cv2.resize(crop, (c.width, c.height), interpolation=cv2.INTER_AREA)
    if c.color_order.value == "RGB":
        small = small[:, :, ::-1]
    return (small.astype(np.float64) - np.array(c.mean)) / np.array(c.std)


@pytest.fixture()
def kiosk_frame() -> np.ndarray:
    from shoplens.data import load_fashion_mnist, render_scene

    x, _ = load_fashion_mnist("test")
    return render_scene(x[3], np.random.default_rng(3))


def test_float_output_matches_reference(kiosk_frame: np.ndarray) -> None:
    c = PreprocessContract.from_range(96, 96, -1, 1)
    got = preprocess(kiosk_frame, c)
    np.testing.assert_allclose(got, _reference(kiosk_frame, c), atol=1e-6)
    assert got.dtype == np.float32 and got.min() >= -1 and got.max() <= 1


def test_per_channel_mean_std(kiosk_frame: np.ndarray) -> None:
    c = PreprocessContract(64, 80, mean=(123.7, 116.3, 103.5), std=(58.4, 57.1, 57.4))
    np.testing.assert_allclose(preprocess(kiosk_frame, c), _reference(kiosk_frame, c), atol=1e-5)


def test_int8_quantization_is_the_affine_map(kiosk_frame: np.ndarray) -> None:
    c = PreprocessContract.from_range(96, 96, 0, 1)
    q = InputQuantization(scale=1 / 255, zero_point=-128, dtype=np.int8)
    got = preprocess(kiosk_frame, c, quantization=q)
    ref = np.clip(np.rint(_reference(kiosk_frame, c) / q.scale + q.zero_point), -128, 127)
    assert got.dtype == np.int8
    assert np.abs(got.astype(int) - ref).max() == 0


@pytest.mark.parametrize(("dtype", "zero_point", "offset"), [(np.uint8, 127, 0), (np.int8, -1, -128)])
def test_a_half_step_zero_point_keeps_all_256_levels(dtype, zero_point: int, offset: int) -> None:
    """[-1, 1] with the converter's scale (1/127.5 stored as float32) puts every pixel exactly half a
    step off a level. Ties round up, as a uint8 model's pixel-in contract (and MediaPipe) expects;
    round-half-to-even would merge pixel pairs (2k, 2k+1) into one level, a 7-bit input."""
    c = PreprocessContract.from_range(16, 16, -1, 1, channels=1)
    q = InputQuantization(scale=float(np.float32(1 / 127.5)), zero_point=zero_point, dtype=dtype)
    ramp = np.arange(256, dtype=np.uint8).reshape(16, 16)
    got = preprocess(ramp, c, quantization=q)[..., 0].astype(int)
    np.testing.assert_array_equal(got, ramp.astype(int) + offset)
    floats = preprocess((ramp / 255.0).astype(np.float32), c, quantization=q)[..., 0].astype(int)
    np.testing.assert_array_equal(floats, got)


def test_linear_mediapipe_samples_on_mediapipes_grid() -> None:
    """Output pixel i samples left + i * scale (pixel centres at integers): on an exact 5x downscale
    that is every fifth pixel starting at the crop's first; OpenCV's own bilinear starts at the third."""
    frame = np.arange(480 * 640, dtype=np.int64).reshape(480, 640)
    frame = (frame % 251).astype(np.uint8)
    c = PreprocessContract.from_range(96, 96, 0, 255, channels=1, interpolation="linear-mediapipe")
    got = preprocess(frame, c)[..., 0]
    np.testing.assert_array_equal(got, frame[0:480:5, 80:560:5].astype(np.float32))
    plain = preprocess(frame, c.replace(interpolation="linear"))[..., 0]
    np.testing.assert_array_equal(plain, frame[2:480:5, 82:560:5].astype(np.float32))
    # an ROI and letterboxing use the same grid over their own box
    roi = preprocess(frame, c, roi=(100, 40, 192, 192))[..., 0]
    np.testing.assert_array_equal(roi, frame[40:232:2, 100:292:2].astype(np.float32))
    box = preprocess(frame, c.replace(crop="letterbox"))[..., 0]
    assert box.shape == (96, 96) and (box[:12] == 0).all() and box[12:84].any()


def test_writes_straight_into_the_given_buffer(kiosk_frame: np.ndarray) -> None:
    c = PreprocessContract.from_range(96, 96, -1, 1)
    pre = Preprocessor(c, quantization=InputQuantization(1 / 127.5, 0, np.int8))
    buf = np.zeros((1, 96, 96, 3), np.int8)
    address = buf.ctypes.data
    out = pre(kiosk_frame, buf)
    assert out is buf and buf.ctypes.data == address and buf.any()
    before = dict(pre._scratch)
    pre(kiosk_frame[::-1].copy(), buf)  # steady state: scratch buffers are reused
    assert all(pre._scratch[k] is v for k, v in before.items())


def test_rgb_input_order_matches_bgr(kiosk_frame: np.ndarray) -> None:
    c = PreprocessContract(96, 96)
    a = preprocess(kiosk_frame, c, input_order="BGR")
    b = preprocess(np.ascontiguousarray(kiosk_frame[:, :, ::-1]), c, input_order="RGB")
    np.testing.assert_array_equal(a, b)


def test_gray_bgra_and_float_frames(kiosk_frame: np.ndarray) -> None:
    c = PreprocessContract(32, 32)
    gray = cv2.cvtColor(kiosk_frame, cv2.COLOR_BGR2GRAY)
    g = preprocess(gray, c)
    assert np.allclose(g[..., 0], g[..., 1]) and np.allclose(g[..., 1], g[..., 2])
    bgra = cv2.cvtColor(kiosk_frame, cv2.COLOR_BGR2BGRA)
    np.testing.assert_array_equal(preprocess(bgra, c), preprocess(kiosk_frame, c))
    as_float = kiosk_frame.astype(np.float32) / 255.0
    np.testing.assert_allclose(preprocess(as_float, c), preprocess(kiosk_frame, c), atol=0.02)
    one = PreprocessContract.from_range(28, 28, 0, 1, channels=1)
    assert preprocess(kiosk_frame, one).shape == (28, 28, 1)


def test_crop_modes() -> None:
    frame = np.zeros((100, 200, 3), np.uint8)
    frame[:, :50] = 255  # a white band on the left, outside the centre crop
    c = PreprocessContract.from_range(10, 10, 0, 1)
    assert preprocess(frame, c).max() == 0.0  # centre crop drops the band
    assert preprocess(frame, c.replace(crop="stretch"))[:, 0].min() == 1.0
    lb = preprocess(frame, c.replace(crop="letterbox"))
    assert lb[0].max() == 0 and lb[4, 0].min() == 1.0  # top padding, band visible
    assert crop_box((480, 640), c) == (80, 0, 480, 480)


def test_roi() -> None:
    frame = np.zeros((100, 100), np.uint8)
    frame[10:30, 60:80] = 200
    c = PreprocessContract.from_range(8, 8, 0, 255, channels=1)
    got = preprocess(frame, c, roi=(60, 10, 20, 20))
    assert got.min() == 200
    assert preprocess(frame, c, roi=(90, 90, 50, 50)).max() == 0  # clipped to the frame
    with pytest.raises(InvalidFrameError, match="outside"):
        preprocess(frame, c, roi=(200, 200, 10, 10))


@pytest.mark.parametrize(
    "frame, msg",
    [
        (None, "camera read failed"),
        (np.zeros((0, 10, 3), np.uint8), "empty"),
        (np.zeros(100, np.uint8), "1-D"),
        (np.zeros((20, 20, 2), np.uint8), "2 channels"),
        (np.zeros((20, 20, 5), np.uint8), "5 channels"),
        (np.zeros((2, 20, 20, 3), np.uint8), "4-D"),
        (np.zeros((20, 20, 3), np.int32), "dtype int32"),
        (np.full((20, 20, 3), np.nan, np.float32), "NaN"),
        (np.zeros((4, 20, 3), np.uint8), "at least 8x8"),
        ([[1, 2], [3, 4]], "numpy array"),
    ],
)
def test_invalid_frames(frame: object, msg: str) -> None:
    with pytest.raises(InvalidFrameError, match=msg):
        preprocess(frame, PreprocessContract(16, 16))


def test_contract_validation_and_round_trip() -> None:
    c = PreprocessContract(96, 128, mean=(1, 2, 3), std=(4, 5, 6), color_order="BGR", crop="letterbox")
    assert PreprocessContract.from_json(c.to_json()) == c
    assert PreprocessContract.from_range(8, 8, -1, 1).value_range == (-1.0, 1.0)
    for kwargs, msg in [
        ({"channels": 2}, "channels"),
        ({"std": (0.0,)}, "std"),
        ({"crop": "zoom"}, "unknown crop mode"),
        ({"mean": (1, 2)}, "mean and std"),
    ]:
        with pytest.raises(UsageError, match=msg):
            PreprocessContract(8, 8, **kwargs)
    with pytest.raises(DataError, match="not valid JSON"):
        PreprocessContract.from_json("{nope")
    with pytest.raises(DataError, match="invalid preprocessing contract"):
        PreprocessContract.from_json('{"size": [8]}')


def test_batch() -> None:
    frames = [np.full((20, 30, 3), v, np.uint8) for v in (0, 255)]
    out = preprocess_batch(frames, PreprocessContract.from_range(8, 8, 0, 1))
    assert out.shape == (2, 8, 8, 3) and out[0].max() == 0 and out[1].min() == 1
