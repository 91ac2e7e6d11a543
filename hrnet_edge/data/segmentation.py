"""Semantic segmentation datasets: Cityscapes and generic image/mask folders.

Both layouts end in one :class:`SegDataset` over (image, mask) file pairs. A mask is
an index image: each pixel holds a class id, or a raw id that a 256-entry lookup table
(``label_map``) turns into one (Cityscapes' ``labelIds`` into its 19 train ids). Ids
that must not count are mapped to ``ignore_index`` (255).

Images come out as float32 CHW RGB in 0..1 (normalization lives in the model graph,
as for pose) and labels as int64 HxW, both at exactly ``input_size``. Evaluation
resizes the whole image to ``input_size``; training scales relative to that same
resize before cropping, so objects have the same size in both.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from PIL import Image

from hrnet_edge.data.seg_io import (IMAGE_EXTENSIONS, colorize, decode_image, decode_mask,
                                    default_palette, resize_image, resize_label)
from hrnet_edge.errors import ConfigError, DataError

__all__ = ["CITYSCAPES_CLASSES", "CITYSCAPES_PALETTE", "IMAGE_EXTENSIONS", "LABEL_ID_TO_TRAIN_ID",
           "SegDataset", "cityscapes_pairs", "colorize", "default_palette", "load_cityscapes",
           "load_mask_folder", "mask_folder_pairs"]

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
    "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
    "bus", "train", "motorcycle", "bicycle",
)
CITYSCAPES_PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
)
# Cityscapes labelIds of the 19 evaluated classes, in train-id order.
_CITYSCAPES_EVAL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)


def _label_id_lut() -> np.ndarray:
    lut = np.full(256, 255, np.uint8)  # labelId -1 (license plate) is 255 as uint8: ignored
    lut[list(_CITYSCAPES_EVAL_IDS)] = np.arange(len(_CITYSCAPES_EVAL_IDS), dtype=np.uint8)
    lut.flags.writeable = False
    return lut


LABEL_ID_TO_TRAIN_ID = _label_id_lut()

def _check_classes(class_names: Sequence[str], palette: Sequence[Sequence[int]] | None,
                   ignore_index: int) -> tuple[list[str], list[tuple[int, int, int]]]:
    names = [str(n) for n in class_names]
    if not names:
        raise DataError("a segmentation dataset needs at least one class name")
    if not 0 <= ignore_index <= 255 or len(names) > ignore_index:
        raise DataError(f"ignore_index must lie in {len(names)}..255 (above the {len(names)} "
                        f"class ids, within uint8), got {ignore_index}")
    if palette is None:
        return names, default_palette(len(names))
    pal = [tuple(int(c) for c in rgb) for rgb in palette]
    if len(pal) != len(names) or any(len(c) != 3 or not all(0 <= v <= 255 for v in c) for c in pal):
        raise DataError(f"palette must hold {len(names)} [r, g, b] triples in 0..255 "
                        f"(one per class), got {list(palette)[:4]}... ({len(pal)} entries)")
    return names, pal


class SegDataset:
    """Map-style segmentation dataset over (image, mask) file pairs.

    Works with a torch ``DataLoader`` as it is (items are NumPy arrays) but imports no
    torch. Files are decoded and checked lazily, item by item; :meth:`validate` scans
    them up front.

    Args:
        pairs: (image path, mask path) pairs.
        class_names: names of the classes, in id order.
        palette: one RGB triple per class (``None``: :func:`default_palette`).
        input_size: (H, W) of every image and label returned.
        train: augment (random scale, crop, horizontal flip); else resize whole images.
        label_map: 256-entry uint8 lookup table applied to mask values (None: identity).
        ignore_index: label value that does not count (also used for padding).
        scale_range: (min, max) random scale relative to the evaluation resize.
        flip: random horizontal flip in train mode.
        seed: augmentation seed; item ``i`` at epoch ``e`` always gets the same draw.

    Raises:
        DataError: no pairs, or invalid classes, palette, ignore_index or label_map.
        ConfigError: invalid input_size, scale_range or seed.
    """

    def __init__(self, pairs: Sequence[tuple[Path, Path]], class_names: Sequence[str],
                 palette: Sequence[Sequence[int]] | None, input_size: tuple[int, int],
                 train: bool = False, label_map: np.ndarray | None = None, ignore_index: int = 255,
                 scale_range: tuple[float, float] = (0.75, 1.25), flip: bool = True, seed: int = 0):
        self.pairs = [(Path(a), Path(b)) for a, b in pairs]
        if not self.pairs:
            raise DataError("a segmentation dataset needs at least one (image, mask) pair")
        self.ignore_index = int(ignore_index)
        self.class_names, self.palette = _check_classes(class_names, palette, self.ignore_index)
        self.num_classes = len(self.class_names)
        if len(input_size) != 2 or min(int(v) for v in input_size) < 1:
            raise ConfigError(f"input_size must be (H, W) with positive sides, got {input_size}")
        self.input_size = (int(input_size[0]), int(input_size[1]))
        lo, hi = (float(v) for v in scale_range)
        if not 0 < lo <= hi:
            raise ConfigError(f"scale_range must be (min, max) with 0 < min <= max, got {scale_range}")
        if int(seed) < 0:
            raise ConfigError(f"seed must be >= 0, got {seed}")
        self.scale_range, self.flip, self.seed = (lo, hi), bool(flip), int(seed)
        self.train = bool(train)
        self.label_map = None if label_map is None else self._check_lut(label_map)
        self.epoch = 0

    @staticmethod
    def _check_lut(label_map: np.ndarray) -> np.ndarray:
        lut = np.asarray(label_map)
        if lut.shape != (256,) or lut.min() < 0 or lut.max() > 255:
            raise DataError(f"label_map must be a 256-entry table of values 0..255, "
                            f"got shape {lut.shape}")
        return lut.astype(np.uint8)

    def __len__(self) -> int:
        return len(self.pairs)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draw of ``epoch`` (call once per epoch when training).

        DataLoader workers copy the dataset when an epoch starts, so this reaches them
        unless ``persistent_workers`` keeps old copies alive.
        """
        self.epoch = int(epoch)

    def read_image(self, i: int) -> np.ndarray:
        """Image ``i`` as uint8 HxWx3 RGB at its original size.

        Raises:
            DataError: the file is missing or corrupt.
        """
        return decode_image(self.pairs[i][0])

    def read_label(self, i: int) -> np.ndarray:
        """Mask ``i`` as uint8 HxW class ids (``label_map`` applied), original size.

        Raises:
            DataError: the mask is missing or corrupt, or holds a value that is neither a
                class id nor ``ignore_index`` after mapping.
        """
        path = self.pairs[i][1]
        raw = decode_mask(path)
        lab = raw if self.label_map is None else self.label_map[raw]
        bad = (lab >= self.num_classes) & (lab != self.ignore_index)
        if bad.any():
            values = np.unique(raw[bad])
            shown = ", ".join(str(v) for v in values[:10]) + (" ..." if len(values) > 10 else "")
            mapped = " (before label_map)" if self.label_map is not None else ""
            raise DataError(f"mask {path} holds values {shown}{mapped} outside the valid class "
                            f"ids 0..{self.num_classes - 1} and the ignore value "
                            f"{self.ignore_index}")
        return lab

    def _check_size(self, i: int, image_hw: tuple[int, int], lab: np.ndarray) -> None:
        if tuple(image_hw) != lab.shape:
            raise DataError(f"mask {self.pairs[i][1]} is {lab.shape[1]}x{lab.shape[0]} but its "
                            f"image {self.pairs[i][0]} is {image_hw[1]}x{image_hw[0]} "
                            f"(WxH); valid: a mask of the image's size")

    def _read_pair(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        img, lab = self.read_image(i), self.read_label(i)
        self._check_size(i, img.shape[:2], lab)
        return img, lab

    def _image_hw(self, i: int) -> tuple[int, int]:
        """Image size from the file header, without decoding the pixels."""
        try:
            with Image.open(self.pairs[i][0]) as im:
                return im.size[1], im.size[0]
        except Exception:  # unreadable: decoding names the problem
            return self.read_image(i).shape[:2]

    def _augment(self, i: int, img: np.ndarray, lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Random scale (relative to the evaluation resize), crop or pad, and flip."""
        rng = np.random.default_rng([self.seed, self.epoch, i])
        h, w = self.input_size
        s = rng.uniform(*self.scale_range)
        sh, sw = max(1, round(h * s)), max(1, round(w * s))
        img, lab = resize_image(img, (sh, sw)), resize_label(lab, (sh, sw))
        if sh < h or sw < w:
            # Pad bottom/right: image black, label ignored, so padding never counts.
            ph, pw = max(0, h - sh), max(0, w - sw)
            img = cv2.copyMakeBorder(img, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=(0, 0, 0))
            lab = cv2.copyMakeBorder(lab, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=self.ignore_index)
        y0 = int(rng.integers(0, img.shape[0] - h + 1))
        x0 = int(rng.integers(0, img.shape[1] - w + 1))
        img, lab = img[y0:y0 + h, x0:x0 + w], lab[y0:y0 + h, x0:x0 + w]
        if self.flip and rng.random() < 0.5:
            img, lab = img[:, ::-1], lab[:, ::-1]
        return img, lab

    def _transform(self, i: int, train: bool) -> tuple[np.ndarray, np.ndarray]:
        img, lab = self._read_pair(i)
        if train:
            img, lab = self._augment(i, img, lab)
        else:
            img, lab = resize_image(img, self.input_size), resize_label(lab, self.input_size)
        image = np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32) / np.float32(255)
        return image, np.ascontiguousarray(lab, dtype=np.int64)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Item ``i``: (float32 3xHxW RGB in 0..1, int64 HxW labels), both at ``input_size``."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} items")
        return self._transform(i % len(self), self.train)

    def stack_images(self, indices: Sequence[int]) -> np.ndarray:
        """(N, 3, H, W) float32 images in 0..1 of ``indices``, evaluation transform."""
        h, w = self.input_size
        out = np.empty((len(indices), 3, h, w), np.float32)
        for k, i in enumerate(indices):
            img = resize_image(self.read_image(int(i)), self.input_size)
            out[k] = img.transpose(2, 0, 1) / np.float32(255)
        return out

    def stack_labels(self, indices: Sequence[int]) -> np.ndarray:
        """(N, H, W) int64 labels of ``indices``, evaluation transform (image size checked)."""
        h, w = self.input_size
        out = np.empty((len(indices), h, w), np.int64)
        for k, i in enumerate(indices):
            lab = self.read_label(int(i))
            self._check_size(int(i), self._image_hw(int(i)), lab)
            out[k] = resize_label(lab, self.input_size)
        return out

    def validate(self, max_items: int | None = None) -> dict:
        """Decode and check the first ``max_items`` pairs (all by default).

        Returns:
            dict with ``items`` (number checked), ``class_pixels`` (int64 per class) and
            ``ignore_pixels``.

        Raises:
            DataError: the first pair that is unreadable, mismatched or out of range.
        """
        n = len(self) if max_items is None else max(0, min(len(self), int(max_items)))
        counts = np.zeros(256, np.int64)
        for i in range(n):
            counts += np.bincount(self._read_pair(i)[1].ravel(), minlength=256)
        return {"items": n, "class_pixels": counts[:self.num_classes].copy(),
                "ignore_pixels": int(counts[self.ignore_index])}


def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise DataError(f"{what} folder not found: expected {path}")


def cityscapes_pairs(root: str | os.PathLike, split: str) -> list[tuple[Path, Path]]:
    """(image, labelIds mask) pairs of a Cityscapes split, sorted by city and name.

    Layout: ``leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png`` with
    ``gtFine/<split>/<city>/<stem>_gtFine_labelIds.png``.

    Raises:
        DataError: a folder is missing, the split has no image, or images lack masks.
    """
    root = Path(root)
    img_root, gt_root = root / "leftImg8bit" / split, root / "gtFine" / split
    _require_dir(img_root, f"Cityscapes '{split}' image")
    _require_dir(gt_root, f"Cityscapes '{split}' annotation")
    pairs, missing = [], []
    for img in sorted(img_root.glob("*/*_leftImg8bit.png")):
        stem = img.name[:-len("_leftImg8bit.png")]
        mask = gt_root / img.parent.name / f"{stem}_gtFine_labelIds.png"
        (pairs if mask.is_file() else missing).append((img, mask))
    if not pairs and not missing:
        raise DataError(f"no Cityscapes images in {img_root}: expected "
                        f"{img_root}/<city>/<name>_leftImg8bit.png")
    if missing:
        shown = ", ".join(str(m) for _, m in missing[:3])
        raise DataError(f"{len(missing)} Cityscapes image(s) lack their labelIds mask; "
                        f"expected e.g. {shown}")
    return pairs


def load_cityscapes(root: str | os.PathLike, split: str, input_size: tuple[int, int],
                    train: bool = False, **kw) -> SegDataset:
    """Cityscapes ``split`` as a 19-class :class:`SegDataset` (labelIds mapped to train ids).

    Args:
        root: folder holding ``leftImg8bit`` and ``gtFine``.
        split: ``train``, ``val`` or ``test``.
        input_size: (H, W) of the items.
        train: augment.
        **kw: further :class:`SegDataset` arguments (``scale_range``, ``flip``, ``seed``...).
    """
    kw.setdefault("label_map", LABEL_ID_TO_TRAIN_ID)
    return SegDataset(cityscapes_pairs(root, split), CITYSCAPES_CLASSES, CITYSCAPES_PALETTE,
                      input_size, train, **kw)


def _read_class_file(root: Path) -> tuple[list[str], list | None]:
    js, txt = root / "classes.json", root / "classes.txt"
    if js.is_file():
        try:
            data = json.loads(js.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise DataError(f"{js} is not valid JSON: {exc}") from None
        names = data.get("classes") if isinstance(data, dict) else None
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise DataError(f"{js} must hold {{\"classes\": [name, ...], \"palette\": "
                            f"[[r, g, b], ...] (optional)}} with non-empty names")
        return names, data.get("palette")
    if txt.is_file():
        names = [line.strip() for line in txt.read_text().splitlines() if line.strip()]
        return names, None
    raise DataError(f"no class list in {root}: expected {txt} (one name per line) or {js}")


def mask_folder_pairs(root: str | os.PathLike, split: str) -> list[tuple[Path, Path]]:
    """(image, mask) pairs of ``<root>/images/<split>`` and ``<root>/masks/<split>``.

    Raises:
        DataError: a folder is missing, no image, two images share a stem, or an image
            lacks its ``<stem>.png`` mask.
    """
    root = Path(root)
    img_dir, mask_dir = root / "images" / split, root / "masks" / split
    _require_dir(img_dir, f"'{split}' image")
    _require_dir(mask_dir, f"'{split}' mask")
    images = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not images:
        raise DataError(f"no images in {img_dir} (valid extensions: {', '.join(IMAGE_EXTENSIONS)})")
    stems: dict[str, Path] = {}
    for p in images:
        if p.stem in stems:
            raise DataError(f"images {stems[p.stem]} and {p} share the stem {p.stem!r}, so "
                            f"both would use the mask {mask_dir / (p.stem + '.png')}")
        stems[p.stem] = p
    pairs = [(p, mask_dir / f"{p.stem}.png") for p in images]
    missing = [m for _, m in pairs if not m.is_file()]
    if missing:
        raise DataError(f"{len(missing)} image(s) in {img_dir} lack their mask; expected e.g. "
                        f"{', '.join(str(m) for m in missing[:3])}")
    return pairs


def load_mask_folder(root: str | os.PathLike, split: str, input_size: tuple[int, int],
                     train: bool = False, **kw) -> SegDataset:
    """A generic image/mask folder (ADE20K-, VOC-style) as a :class:`SegDataset`.

    Layout: ``<root>/images/<split>/*.{jpg,jpeg,png}``, ``<root>/masks/<split>/<stem>.png``
    (index PNG: pixel value = class id, 255 ignored) and ``<root>/classes.json``
    (``{"classes": [...], "palette": [[r, g, b], ...]}``, palette optional; preferred
    when both exist) or ``<root>/classes.txt`` (one name per line).

    Args:
        root: dataset folder.
        split: sub-folder name, e.g. ``train`` or ``val``.
        input_size: (H, W) of the items.
        train: augment.
        **kw: further :class:`SegDataset` arguments, e.g. ``label_map`` to shift
            ADE20K's ids (0 = other) down by one with 0 ignored.
    """
    names, palette = _read_class_file(Path(root))
    return SegDataset(mask_folder_pairs(root, split), names, palette, input_size, train, **kw)
