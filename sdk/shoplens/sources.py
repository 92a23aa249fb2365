"""Where frames come from: an image, a folder of images, a video file, or a camera.

One implementation for ``shoplens classify`` and the kiosk sample app. Video frames carry the
container's own timestamps (its frame rate, not an assumed 30 fps); a video that ends before the
frame count its container declares is reported; OpenCV's native log lines (a missing camera, a
damaged stream) are kept off stderr, and a camera that disappears is reopened.

    >>> with open_source("out/demo/kiosk_video/kiosk.avi") as src:     # doctest: +SKIP
    ...     for f in src:
    ...         print(f.name, f.timestamp_ms, None if f.image is None else f.image.shape)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from shoplens.data.datasets import IMAGE_EXTENSIONS, read_image
from shoplens.errors import DataError, UsageError
from shoplens.internal.quiet import quiet_native_stderr

__all__ = ["VIDEO_EXTENSIONS", "Frame", "FrameSource", "VideoSource", "open_source"]

# FFmpeg's decoder threads log damaged packets ("ac-tex damaged", "Error at MB") after read()
# returns, outside quiet_native_stderr; OpenCV reads this level when it first opens a video.
# A damaged video is reported by us instead (its frame count against the container's).
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

VIDEO_EXTENSIONS = frozenset({".avi", ".mp4", ".mkv", ".mov", ".webm", ".mjpg", ".mjpeg", ".m4v"})
DEFAULT_FPS = 30.0


@dataclass(frozen=True)
class Frame:
    """One frame: its name (file, or ``video#index``), the image (None: unreadable) and time."""

    name: str
    image: np.ndarray | None
    index: int
    timestamp_ms: int


class VideoSource:
    """A camera (by index) or a video file, read frame by frame.

    ``read()`` returns None when no frame came (the camera is gone, the file ended); with
    ``reopen`` the next ``read()`` tries to open a camera again (a kiosk's), and with ``loop`` a
    finished video starts over (or, once it is gone, is looked for again). OpenCV's native log
    output is silenced while opening and reading.
    """

    def __init__(self, spec: str | int, *, loop: bool = False, reopen: bool = False) -> None:
        self.spec = str(spec)
        self.is_camera = self.spec.isdigit()
        self.loop, self.reopen = loop, reopen
        self.cap: Any = None
        self.fps = DEFAULT_FPS
        self.declared_frames: int | None = None  # what the container says (videos)
        self.position = -1  # index of the last frame read in the current pass
        self.available = False
        self.opened_once = False

    def open(self) -> bool:
        """Open (or reopen) the device or file; False when it cannot be opened now."""
        if not self.is_camera and not Path(self.spec).is_file():
            return False
        with quiet_native_stderr():  # OpenCV logs every back end it tries, and damaged streams
            cap = cv2.VideoCapture(int(self.spec) if self.is_camera else self.spec)
            ok = cap.isOpened()
        if not ok:
            cap.release()
            return False
        self.cap = cap
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 1 <= fps <= 1000 else DEFAULT_FPS
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.declared_frames = count if count > 0 and not self.is_camera else None
        self.position = -1
        self.opened_once = True
        return True

    def read(self) -> np.ndarray | None:
        if self.cap is None:
            # a file that ended stays ended (``loop`` restarts it below); a camera may come back
            retry = not self.opened_once or (self.reopen and self.is_camera) or self.loop
            if not (retry and self.open()):
                self.available = False
                return None
        with quiet_native_stderr():
            ok, frame = self.cap.read()
        if not ok or frame is None:
            self.cap.release()
            self.cap = None
            if self.loop and not self.is_camera and self.open():
                with quiet_native_stderr():
                    ok, frame = self.cap.read()
                if ok and frame is not None:
                    self.position = 0
                    self.available = True
                    return np.asarray(frame)
            self.available = False
            return None
        self.position += 1
        self.available = True
        return np.asarray(frame)

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


class FrameSource:
    """Frames of an image, a folder, a video or a camera, as :class:`Frame` records.

    ``kind`` is ``image``, ``folder``, ``video`` or ``camera``; ``total`` the number of frames
    when known; ``fps`` the video's own rate. After iterating, ``warnings`` says what went wrong
    on the way (a video shorter than its container declares).
    """

    def __init__(
        self, kind: str, *, files: list[Path] | None = None, video: VideoSource | None = None
    ) -> None:
        self.kind = kind
        self.files = files or []
        self.video = video
        self.warnings: list[str] = []
        self.read_frames = 0

    @property
    def streaming(self) -> bool:
        return self.kind in ("video", "camera")

    @property
    def fps(self) -> float | None:
        return self.video.fps if self.video is not None else None

    @property
    def total(self) -> int | None:
        if self.video is not None:
            return self.video.declared_frames
        return len(self.files)

    def __iter__(self) -> Iterator[Frame]:
        if self.video is None:
            for i, p in enumerate(self.files):
                self.read_frames += 1
                yield Frame(str(p), read_image(p), i, i)
            return
        v = self.video
        name = f"camera{v.spec}" if v.is_camera else Path(v.spec).name
        misses = 0
        i = 0
        while True:
            img = v.read()
            if img is None:
                if not v.is_camera or misses >= 30:
                    break
                misses += 1
                yield Frame(f"{name}#{i}", None, i, round(i * 1000 / v.fps))
                continue
            misses = 0
            self.read_frames += 1
            yield Frame(f"{name}#{i}", img, i, round(i * 1000 / v.fps))
            i += 1
        declared = v.declared_frames
        if declared and self.read_frames < declared:
            self.warnings.append(
                f"{name} ended after {self.read_frames} of the {declared} frames its container declares "
                "(truncated or damaged file)"
            )

    def close(self) -> None:
        if self.video is not None:
            self.video.close()

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_source(source: str | Path | None = None, *, camera: int | None = None) -> FrameSource:
    """Open what ``shoplens classify`` reads: an image, a folder of images, a video or a camera.

    Args:
      source: an image file, a folder (searched recursively), or a video file.
      camera: a camera index instead of ``source``.

    Returns:
      A :class:`FrameSource` (iterate it; close it, or use it in a ``with`` block).

    Raises:
      UsageError: both or neither of ``source`` and ``camera``.
      DataError: missing path, empty folder, a video or camera that cannot be opened, or a single
        image that cannot be read.
    """
    if camera is not None and source is not None:
        raise UsageError("give a SOURCE or --camera N, not both")
    if camera is not None:
        v = VideoSource(camera, reopen=True)
        if not v.open():
            raise DataError(f"cannot open camera {camera}; check that it is connected and not in use")
        return FrameSource("camera", video=v)
    if source is None:
        raise UsageError("give an IMAGE, a DIR or a VIDEO, or --camera N")
    p = Path(source)
    if not p.exists():
        raise DataError(f"{p} does not exist")
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise DataError(f"{p} holds no images (jpg, png, bmp, webp)")
        return FrameSource("folder", files=files)
    if p.suffix.lower() in VIDEO_EXTENSIONS:
        v = VideoSource(str(p))
        if not v.open():
            raise DataError(f"cannot open video {p} (corrupt, or a codec OpenCV lacks)")
        return FrameSource("video", video=v)
    if read_image(p) is None:
        raise DataError(f"cannot read image {p} (corrupt, truncated or not an image)")
    return FrameSource("image", files=[p])
