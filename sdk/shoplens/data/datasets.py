"""Labelled image datasets that stream in batches, so memory stays bounded at 100k+ images.

Three kinds, all built by :func:`shoplens.data.spec.open_dataset` from a data spec:

* :class:`ArrayDataset` - images already in memory (Fashion-MNIST);
* :class:`FolderDataset` - one subfolder per class of jpg/png/bmp/webp files;
* :class:`KioskDataset` - frames made by the kiosk generator, with their ground-truth CSV.

Every dataset yields :class:`Batch` objects of uint8 images (HxW gray or HxWx3 BGR, as OpenCV
reads them), integer labels and string ids. Images are not preprocessed here: that is the job of
``shoplens.preprocess`` with the model's contract.
"""

from __future__ import annotations

import contextlib
import csv
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from shoplens.errors import DataError

__all__ = [
    "IMAGE_EXTENSIONS",
    "ArrayDataset",
    "Batch",
    "Dataset",
    "FolderDataset",
    "KioskDataset",
    "read_image",
    "read_labels_file",
]

log = logging.getLogger("shoplens.data")

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})


@dataclass
class Batch:
    images: list[np.ndarray]
    labels: np.ndarray
    ids: list[str]

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class Dataset:
    """Base: a named, labelled, batch-streaming image source."""

    name: str
    label_names: tuple[str, ...]
    skipped: int = field(default=0, init=False)

    def __len__(self) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    def batches(self, batch_size: int = 64) -> Iterator[Batch]:  # pragma: no cover - overridden
        raise NotImplementedError

    def ids(self) -> list[str]:
        """The id of every image, in order, as :meth:`batches` yields them (subclasses avoid decoding)."""
        return [i for b in self.batches(256) for i in b.ids]

    def class_ids(self) -> np.ndarray:
        """The class index of every listed image, without decoding any (subclasses override)."""
        return np.concatenate([b.labels for b in self.batches(256)] or [np.empty(0, np.int64)])

    def _check_batch_size(self, batch_size: int) -> None:
        if batch_size < 1:
            raise DataError(f"batch size must be >= 1, got {batch_size}")

    def __iter__(self) -> Iterator[tuple[np.ndarray, int, str]]:
        for b in self.batches():
            yield from zip(b.images, b.labels.tolist(), b.ids, strict=True)


@dataclass
class ArrayDataset(Dataset):
    images: np.ndarray = field(default_factory=lambda: np.empty((0, 1, 1), np.uint8))
    labels: np.ndarray = field(default_factory=lambda: np.empty((0,), np.int64))
    id_prefix: str = ""

    def __len__(self) -> int:
        return len(self.images)

    def ids(self) -> list[str]:
        return [f"{self.id_prefix}{i}" for i in range(len(self.images))]

    def class_ids(self) -> np.ndarray:
        return np.asarray(self.labels, np.int64)

    def batches(self, batch_size: int = 64) -> Iterator[Batch]:
        self._check_batch_size(batch_size)
        for s in range(0, len(self.images), batch_size):
            imgs = self.images[s : s + batch_size]
            yield Batch(
                list(imgs),
                np.asarray(self.labels[s : s + batch_size], np.int64),
                [f"{self.id_prefix}{i}" for i in range(s, s + len(imgs))],
            )


def read_labels_file(path: Path) -> tuple[str, ...]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read labels file {path}: {exc}") from None
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not names:
        raise DataError(f"labels file {path} is empty")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise DataError(f"labels file {path} repeats {dup}")
    return names


@contextlib.contextmanager
def opencv_quiet() -> Iterator[None]:
    """OpenCV's own log lines off (a damaged PNG logs two); ShopLens reports the failure itself."""
    cvlog = cv2.utils.logging
    level = cvlog.getLogLevel()
    cvlog.setLogLevel(cvlog.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cvlog.setLogLevel(level)


def read_image(path: Path) -> np.ndarray | None:
    """Read an image as uint8 gray or BGR; None when it cannot be decoded."""
    try:
        data = np.fromfile(path, np.uint8)
    except OSError:
        return None
    return decode_image(data)


def decode_image(data: bytes | np.ndarray) -> np.ndarray | None:
    """Encoded image bytes (PNG, JPEG, BMP, WebP) as uint8 gray or BGR; None when they do not decode.

    The one decoder: files read here and images a Beam worker fetched decode identically.
    """
    if isinstance(data, (bytes, bytearray)):
        buf = np.frombuffer(data, np.uint8)
    else:
        buf = np.asarray(data, np.uint8)
    if buf.size == 0:
        return None
    with opencv_quiet():
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None:
        return None
    if img.dtype != np.uint8:  # 16-bit PNGs and the like
        img = cv2.convertScaleAbs(img, alpha=255.0 / max(float(img.max()), 1.0))
    if img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    elif img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    return img


MIN_IMAGE_SIDE = 8  # the preprocessor's smallest frame (shoplens.preprocess.MIN_FRAME_SIDE)


def folder_label_index(names: Sequence[str]) -> dict[str, int]:
    """Folder name -> class index for labels ``names``: the label itself, or with ``/`` as ``_``/``-``."""
    index: dict[str, int] = {}
    for i, n in enumerate(names):
        for spelling in (n, n.replace("/", "_"), n.replace("/", "-")):
            index.setdefault(spelling, i)
    return index


@dataclass
class FolderDataset(Dataset):
    """One subfolder per class.

    Folders map to classes **by name**: to ``label_names`` when given (a model's labels: every
    folder must be one of them, a subset is fine), else to the folder's own ``labels.txt``, else
    to the sorted folder names. A label that cannot be a folder name matches its folder with ``/``
    written as ``_`` or ``-`` ("T-shirt/top" is ``T-shirt_top``). Images that cannot be read, or
    are smaller than the smallest frame ShopLens accepts, are skipped, counted and named.
    """

    root: Path = Path(".")
    files: list[tuple[Path, int]] = field(default_factory=list)
    non_images: int = 0
    skipped_files: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, root: str | Path, label_names: Sequence[str] | None = None) -> FolderDataset:
        root = Path(root)
        if not root.exists():
            raise DataError(f"image folder {root} does not exist")
        if not root.is_dir():
            raise DataError(f"{root} is not a directory; expected one subfolder per class")
        if (root / "ground_truth.csv").is_file():  # the kiosk generator's layout (data/kiosk.py)
            raise DataError(f"{root} holds kiosk frames (ground_truth.csv); give it as the spec kiosk:{root}")
        subdirs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        labels_txt = root / "labels.txt"
        if label_names is not None:
            names = tuple(label_names)
            source = "the model's labels"
        elif labels_txt.is_file():
            names = read_labels_file(labels_txt)
            source = str(labels_txt)
        else:
            names = tuple(subdirs)
            source = "its folder names"
        index = folder_label_index(names)
        unknown = [d for d in subdirs if d not in index]
        if unknown:
            raise DataError(
                f"{root} has class folders {unknown} that are not among {source} ({', '.join(names)}); "
                "rename them (a '/' in a label is written '_' or '-') or remove them"
            )
        files: list[tuple[Path, int]] = []
        non_images = 0
        for d in subdirs:
            for p in sorted((root / d).rglob("*")):
                if not p.is_file() or p.name.startswith("."):
                    continue
                if p.suffix.lower() in IMAGE_EXTENSIONS:
                    files.append((p, index[d]))
                else:
                    non_images += 1
        if not files:
            raise DataError(
                f"image folder {root} holds no images ({non_images} non-image files); "
                "expected ROOT/<class>/<image>.jpg|png|bmp|webp"
            )
        if non_images:
            log.warning("%s: skipped %d non-image files", root, non_images)
        ds = cls(name=f"folder:{root}", label_names=names, root=root, files=files, non_images=non_images)
        ds.skipped = non_images
        return ds

    def __len__(self) -> int:
        return len(self.files)

    def class_ids(self) -> np.ndarray:
        return np.asarray([c for _, c in self.files], np.int64)

    def batches(self, batch_size: int = 64) -> Iterator[Batch]:
        self._check_batch_size(batch_size)
        unreadable = 0
        yielded = 0
        for s in range(0, len(self.files), batch_size):
            imgs: list[np.ndarray] = []
            labels: list[int] = []
            ids: list[str] = []
            for p, lab in self.files[s : s + batch_size]:
                img = read_image(p)
                if img is None or min(img.shape[:2]) < MIN_IMAGE_SIDE:
                    unreadable += 1
                    if len(self.skipped_files) < 100:
                        why = "unreadable" if img is None else f"{img.shape[1]}x{img.shape[0]}, too small"
                        self.skipped_files.append(f"{p.relative_to(self.root)} ({why})")
                    continue
                imgs.append(img)
                labels.append(lab)
                ids.append(str(p.relative_to(self.root)))
            if imgs:
                yielded += len(imgs)
                yield Batch(imgs, np.asarray(labels, np.int64), ids)
        self.skipped = self.non_images + unreadable
        if unreadable and yielded:
            log.warning("%s: skipped %d unreadable or too small images: %s", self.root, unreadable,
                        ", ".join(self.skipped_files[:5]) + (" ..." if unreadable > 5 else ""))  # fmt: skip
        if not yielded:
            raise DataError(f"image folder {self.root}: none of its {len(self.files)} images could be read")


@dataclass
class KioskDataset(Dataset):
    """Frames written by the kiosk generator (JPEG files or an MJPG video) plus ground truth."""

    root: Path = Path(".")
    rows: list[dict[str, str]] = field(default_factory=list)

    @classmethod
    def open(cls, root: str | Path, subset: str = "all") -> KioskDataset:
        from shoplens.data.kiosk import GROUND_TRUTH_CSV

        root = Path(root)
        gt = root / GROUND_TRUTH_CSV
        if not root.is_dir():
            raise DataError(f"kiosk directory {root} does not exist; generate it with 'shoplens data kiosk'")
        if not gt.is_file():
            raise DataError(f"{root} has no {GROUND_TRUTH_CSV}; the generator was interrupted, run it again")
        labels_txt = root / "labels.txt"
        if not labels_txt.is_file():
            raise DataError(f"{root} has no labels.txt; regenerate it with 'shoplens data kiosk'")
        names = read_labels_file(labels_txt)
        try:
            with gt.open(newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"cannot read {gt}: {exc}") from None
        need = {"index", "file", "label", "bad_reason"}
        if rows and not need <= set(rows[0]):
            raise DataError(f"{gt} lacks columns {sorted(need - set(rows[0]))}")
        for r in rows:
            try:
                lab = int(r["label"])
            except ValueError:
                raise DataError(
                    f"{gt}: label {r['label']!r} of frame {r['index']} is not an integer"
                ) from None
            if not 0 <= lab < len(names):
                raise DataError(f"{gt}: label {lab} of frame {r['index']} is outside 0..{len(names) - 1}")
        if subset == "good":
            rows = [r for r in rows if not r["bad_reason"]]
        elif subset == "bad":
            rows = [r for r in rows if r["bad_reason"]]
        elif subset != "all":
            raise DataError(f"unknown kiosk subset {subset!r}; use all, good or bad")
        if not rows:
            raise DataError(f"{gt} lists no frames ({subset})")
        name = f"kiosk:{root}" + (f":{subset}" if subset != "all" else "")
        return cls(name=name, label_names=names, root=root, rows=rows)

    def __len__(self) -> int:
        return len(self.rows)

    def class_ids(self) -> np.ndarray:
        return np.asarray([int(r["label"]) for r in self.rows], np.int64)

    def ids(self) -> list[str]:
        if any("#" in r["file"] for r in self.rows):
            return super().ids()  # a video may deliver fewer frames than listed
        return [r["index"] for r in self.rows]

    @property
    def bad_reasons(self) -> list[str]:
        return [r["bad_reason"] for r in self.rows]

    def _frames(self) -> Iterator[tuple[dict[str, str], np.ndarray | None]]:
        video_rows = [r for r in self.rows if "#" in r["file"]]
        if not video_rows:
            for r in self.rows:
                yield r, read_image(self.root / r["file"])
            return
        video = self.root / video_rows[0]["file"].split("#", 1)[0]
        cap = cv2.VideoCapture(str(video))
        if not cap.isOpened():
            raise DataError(f"cannot open kiosk video {video}")
        wanted = {int(r["file"].split("#", 1)[1]): r for r in self.rows}
        last = max(wanted)
        try:
            i = 0
            while i <= last:
                ok, frame = cap.read()
                if not ok:
                    break
                if i in wanted:
                    yield wanted.pop(i), frame
                i += 1
        finally:
            cap.release()
        for r in wanted.values():  # frames the video did not deliver
            yield r, None

    def batches(self, batch_size: int = 64) -> Iterator[Batch]:
        self._check_batch_size(batch_size)
        imgs: list[np.ndarray] = []
        labels: list[int] = []
        ids: list[str] = []
        missing = 0
        for r, frame in self._frames():
            if frame is None:
                missing += 1
                continue
            imgs.append(frame)
            labels.append(int(r["label"]))
            ids.append(r["index"])
            if len(imgs) == batch_size:
                yield Batch(imgs, np.asarray(labels, np.int64), ids)
                imgs, labels, ids = [], [], []
        if imgs:
            yield Batch(imgs, np.asarray(labels, np.int64), ids)
        self.skipped = missing
        if missing:
            log.warning("%s: skipped %d missing or unreadable frames", self.root, missing)
