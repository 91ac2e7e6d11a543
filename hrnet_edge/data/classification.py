"""Image classification dataset over the ImageNet folder layout.

The layout is ``<root>/<split>/<class_name>/<image>`` with ``.jpeg``, ``.jpg`` or
``.png`` files (any letter case). Labels are indices into ``class_names``: the sorted
folder names of the split, or a list the caller passes so that the validation split
uses the training split's numbering.

Images come out as float32 CHW RGB in 0..1, like the pose dataset: normalization
lives inside the model graph, so exported models take what an app has. Nothing here
imports torch; a torch ``DataLoader`` takes the dataset as it is.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from PIL import Image

from hrnet_edge.errors import DataError

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
LAYOUT = "<root>/<split>/<class_name>/*.{jpeg,jpg,png}"
# Aspect range of the random-resized crop (width over height, relative to the input's).
_CROP_ASPECT = (3.0 / 4.0, 4.0 / 3.0)
_CROP_TRIES = 10
# PIL modes that convert("RGB") would clip rather than scale: 16- and 32-bit greys.
_WIDE_GREY_MODES = ("I", "I;16", "I;16B", "I;16L", "F")


def _short_list(names: Sequence[str], limit: int = 20) -> str:
    """A list for an error message; long lists (ImageNet has 1000 classes) are cut."""
    names = list(names)
    more = f", ... ({len(names)} in all)" if len(names) > limit else ""
    return "[" + ", ".join(repr(n) for n in names[:limit]) + more + "]"


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` resolves (symlinks followed) to a place under ``folder``."""
    return path.resolve().is_relative_to(folder)


def _to_rgb(im: Image.Image) -> np.ndarray:
    """RGB uint8 HWC pixels of a PIL image of any mode."""
    if im.mode in _WIDE_GREY_MODES:
        # 16-bit PNGs hold 0..65535: scale to 8 bits instead of letting PIL saturate.
        grey = np.asarray(im, dtype=np.float64)
        peak = 65535.0 if im.mode.startswith("I") else 1.0
        grey = np.clip(grey / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
    # RGBA, LA and palette images drop their alpha as torchvision's loader does, so a
    # model sees the same pixels here as in a torchvision pipeline.
    return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))


def decode_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to RGB uint8 HWC.

    Grayscale, grayscale+alpha, palette and RGBA files are converted to RGB.

    Raises:
        DataError: the file is missing, unreadable, not an image or truncated.
    """
    try:
        with Image.open(path) as im:
            im.load()  # decodes all data now: a truncated file fails here, not later
            return _to_rgb(im)
    except FileNotFoundError:
        raise DataError(f"image file {path} does not exist") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        # PIL reports broken files with any of these, depending on the format.
        raise DataError(f"cannot decode image {path}: {exc} (unreadable, truncated or "
                        f"not an image)") from None


def _resize(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize with area averaging when shrinking (no aliasing), bilinear when growing."""
    if (height, width) == img.shape[:2]:
        return img
    shrink = height < img.shape[0] or width < img.shape[1]
    interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return cv2.resize(img, (width, height), interpolation=interp)


def eval_transform(img: np.ndarray, input_size: tuple[int, int],
                   resize_ratio: float = 0.875) -> np.ndarray:
    """The standard ImageNet evaluation view: resize, then centre crop.

    The image is scaled so that it just covers ``input_size / resize_ratio``; for a
    square input that is the usual "short side to round(H / resize_ratio)". The centre
    ``input_size`` region is then cut out.

    Args:
        img: HWC uint8 image.
        input_size: (H, W) of the output.
        resize_ratio: crop fraction (0.875 is the common 224/256).

    Returns:
        HWC uint8 image of exactly ``input_size``.
    """
    out_h, out_w = input_size
    h, w = img.shape[:2]
    scale = max(round(out_h / resize_ratio) / h, round(out_w / resize_ratio) / w)
    # Never below the crop itself, which a very wide or tall image could otherwise hit.
    new_h, new_w = max(out_h, round(h * scale)), max(out_w, round(w * scale))
    resized = _resize(img, new_h, new_w)
    top, left = int(round((new_h - out_h) / 2.0)), int(round((new_w - out_w) / 2.0))
    return np.ascontiguousarray(resized[top:top + out_h, left:left + out_w])


def random_resized_box(rng: np.random.Generator, height: int, width: int,
                       scale_range: tuple[float, float], aspect: float = 1.0
                       ) -> tuple[int, int, int, int]:
    """A random crop box (top, left, h, w) as Inception-style training samples it.

    The area is a uniform fraction of the image in ``scale_range``; the aspect (w/h)
    is log-uniform in [3/4, 4/3] times ``aspect`` (the output's), so the resize to
    the output distorts by at most 4/3 either way. After ten misses the largest
    centred box of an allowed aspect is used.
    """
    area = float(height * width)
    lo, hi = math.log(_CROP_ASPECT[0] * aspect), math.log(_CROP_ASPECT[1] * aspect)
    for _ in range(_CROP_TRIES):
        target = area * rng.uniform(scale_range[0], scale_range[1])
        ratio = math.exp(rng.uniform(lo, hi))
        w = int(round(math.sqrt(target * ratio)))
        h = int(round(math.sqrt(target / ratio)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    ratio = width / height
    if ratio < _CROP_ASPECT[0] * aspect:
        w, h = width, int(round(width / (_CROP_ASPECT[0] * aspect)))
    elif ratio > _CROP_ASPECT[1] * aspect:
        h, w = height, int(round(height * _CROP_ASPECT[1] * aspect))
    else:
        h, w = height, width
    h, w = max(1, min(h, height)), max(1, min(w, width))
    return (height - h) // 2, (width - w) // 2, h, w


def train_transform(img: np.ndarray, input_size: tuple[int, int], rng: np.random.Generator,
                    scale_range: tuple[float, float] = (0.35, 1.0),
                    flip: bool = True) -> np.ndarray:
    """Random-resized crop to ``input_size``, then a horizontal flip half of the time.

    Returns:
        HWC uint8 image of exactly ``input_size``.
    """
    out_h, out_w = input_size
    top, left, h, w = random_resized_box(rng, img.shape[0], img.shape[1], scale_range,
                                         aspect=out_w / out_h)
    crop = _resize(img[top:top + h, left:left + w], out_h, out_w)
    # Draw the flip even when flipping is off, so toggling it keeps the crops the same.
    flipped = rng.random() < 0.5
    if flip and flipped:
        crop = crop[:, ::-1]
    return np.ascontiguousarray(crop)


def _to_chw(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)


def _check_params(input_size, resize_ratio, scale_range, seed) -> tuple[int, int]:
    try:
        size = (int(input_size[0]), int(input_size[1]))
    except (TypeError, ValueError, IndexError):
        raise DataError(f"input_size must be (H, W), got {input_size!r}") from None
    if len(input_size) != 2 or min(size) < 1:
        raise DataError(f"input_size must be (H, W) with positive sides, got {input_size!r}")
    if not 0.0 < float(resize_ratio) <= 1.0:
        raise DataError(f"resize_ratio must be in (0, 1], got {resize_ratio}")
    lo, hi = (float(v) for v in scale_range)
    if not 0.0 < lo <= hi <= 1.0:
        raise DataError(f"scale_range must satisfy 0 < min <= max <= 1, got {scale_range}")
    if int(seed) < 0:
        raise DataError(f"seed must be >= 0, got {seed}")
    return size


def _visible_entries(folder: Path) -> list[Path]:
    # Dot entries are skipped: macOS "._name.jpg" files and ".ipynb_checkpoints"
    # folders look like data by name but are not.
    return sorted((p for p in folder.iterdir() if not p.name.startswith(".")),
                  key=lambda p: p.name)


def _class_folders(split_dir: Path, real_split: Path,
                   class_names: Sequence[str] | None) -> list[str]:
    """The split's class folder names, checked against ``class_names`` when given."""
    found = []
    for entry in _visible_entries(split_dir):
        if not _inside(entry, real_split):
            raise DataError(f"{entry} resolves to {entry.resolve()}, outside {split_dir}; "
                            f"links that leave the dataset are refused")
        if entry.is_dir():
            found.append(entry.name)
    if class_names is None:
        if not found:
            raise DataError(f"{split_dir} holds no class folder; expected the layout {LAYOUT}")
        return found
    given = [str(c) for c in class_names]
    bad = [c for c in given if not c or c in (".", "..") or "/" in c or os.sep in c]
    if bad or len(set(given)) != len(given):
        raise DataError(f"class_names must be distinct plain folder names, got "
                        f"{_short_list(given)}")
    extra, missing = sorted(set(found) - set(given)), sorted(set(given) - set(found))
    if extra or missing:
        raise DataError(f"the class folders of {split_dir} do not match class_names: folders "
                        f"{_short_list(found)}, class_names {_short_list(given)} (folders "
                        f"not in class_names: {_short_list(extra)}; class_names without a "
                        f"folder: {_short_list(missing)}); every split must hold the "
                        f"training split's classes")
    return given


def scan_image_folder(split_dir: str | os.PathLike, class_names: Sequence[str] | None = None
                      ) -> tuple[list[str], list[tuple[Path, int]]]:
    """List the images of one split of an ImageNet-style folder.

    Args:
        split_dir: ``<root>/<split>``.
        class_names: label order to use; default the sorted class folder names.

    Returns:
        (class names, sorted list of (image path, label)).

    Raises:
        DataError: the folder is missing, a class folder holds no image, the folders
            differ from ``class_names``, or an entry resolves outside ``split_dir``.
    """
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise DataError(f"dataset split folder {split_dir} does not exist; expected the "
                        f"layout {LAYOUT}")
    real_split = split_dir.resolve()
    names = _class_folders(split_dir, real_split, class_names)
    samples: list[tuple[Path, int]] = []
    for label, name in enumerate(names):
        folder = split_dir / name
        files = []
        for entry in _visible_entries(folder):
            if entry.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            if not _inside(entry, real_split):
                raise DataError(f"{entry} resolves to {entry.resolve()}, outside {split_dir}; "
                                f"links that leave the dataset are refused")
            if entry.is_file():
                files.append(entry)
        if not files:
            raise DataError(f"class folder {folder} holds no image "
                            f"({'/'.join(IMAGE_EXTENSIONS)}); expected the layout {LAYOUT}")
        samples.extend((f, label) for f in files)
    return names, samples


class ImageFolderDataset:
    """Classification dataset over ``<root>/<split>/<class_name>/*.{jpeg,jpg,png}``.

    A map-style dataset: ``dataset[i]`` is ``(image, label)`` with the image float32
    CHW RGB in 0..1 of exactly ``input_size`` and the label an ``np.int64``.

    Training items are augmented with a generator seeded by (seed, epoch, index), so an
    item's augmentation does not depend on the DataLoader worker that loads it and is
    repeated exactly by a rerun. Call :meth:`set_epoch` before each epoch to get new
    augmentations (with ``persistent_workers`` the workers keep the epoch they copied).

    Args:
        root: dataset root.
        split: split folder name, e.g. ``"train"`` or ``"val"``.
        input_size: (H, W) of the model input.
        train: augment (random-resized crop and flip) instead of the eval view.
        class_names: label order; pass the training split's ``class_names`` for
            validation so both number the classes alike. Default: sorted folder names.
        seed: base seed of the augmentation (>= 0).
        resize_ratio: eval crop fraction: the image is resized to cover
            ``input_size / resize_ratio`` and centre-cropped.
        scale_range: area fraction range of the random-resized crop.
        flip: random horizontal flip in train mode.

    Raises:
        DataError: the layout is wrong or empty, the classes differ from
            ``class_names``, an entry resolves outside ``<root>/<split>``, or a
            parameter is invalid.
    """

    def __init__(self, root: str | os.PathLike, split: str, input_size: tuple[int, int],
                 train: bool, class_names: Sequence[str] | None = None, seed: int = 0,
                 resize_ratio: float = 0.875, scale_range: tuple[float, float] = (0.35, 1.0),
                 flip: bool = True):
        self.input_size = _check_params(input_size, resize_ratio, scale_range, seed)
        self.root, self.split = Path(root), str(split)
        if not self.root.is_dir():
            raise DataError(f"dataset root {self.root} does not exist; expected the layout "
                            f"{LAYOUT}")
        if not self.split or Path(self.split).name != self.split or self.split in (".", ".."):
            raise DataError(f"split must be a folder name such as 'train' or 'val', "
                            f"got {split!r}")
        self.split_dir = self.root / self.split
        self.train, self.flip, self.seed = bool(train), bool(flip), int(seed)
        self.resize_ratio = float(resize_ratio)
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.epoch = 0
        names, self.samples = scan_image_folder(self.split_dir, class_names)
        self._class_names = list(names)
        self._labels = np.asarray([lab for _, lab in self.samples], dtype=np.int64)

    @property
    def class_names(self) -> list[str]:
        """Class names in label order (a copy)."""
        return list(self._class_names)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self._class_names)

    @property
    def labels(self) -> np.ndarray:
        """(N,) int64 label of every item, in item order (a copy)."""
        return self._labels.copy()

    @property
    def paths(self) -> list[Path]:
        """Image path of every item, in item order."""
        return [p for p, _ in self.samples]

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentations of ``epoch`` (>= 0) for the following items."""
        if int(epoch) < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.samples)

    def _index(self, index: int) -> int:
        i = int(index)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        return i

    def read_image(self, index: int) -> np.ndarray:
        """The decoded image of item ``index``, RGB uint8 HWC at its own size.

        Raises:
            DataError: the file cannot be decoded; the message names it.
        """
        return decode_image(self.samples[self._index(index)][0])

    def item_rng(self, index: int) -> np.random.Generator:
        """The augmentation generator of item ``index`` in the current epoch."""
        return np.random.default_rng([self.seed, self.epoch, self._index(index)])

    def view(self, index: int, augment: bool | None = None) -> np.ndarray:
        """Item ``index`` as the model sees it, uint8 HWC of ``input_size``.

        Args:
            index: item index.
            augment: use the train transform; default the dataset's ``train`` flag.
        """
        img = self.read_image(index)
        if self.train if augment is None else augment:
            return train_transform(img, self.input_size, self.item_rng(index),
                                   self.scale_range, self.flip)
        return eval_transform(img, self.input_size, self.resize_ratio)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.int64]:
        i = self._index(index)
        return _to_chw(self.view(i)), np.int64(self.samples[i][1])

    def stack_images(self, indices: Sequence[int] | None = None) -> np.ndarray:
        """Eval views of ``indices`` (default: all) as (N, 3, H, W) float32 RGB 0..1.

        Never augmented, whatever ``train`` says: used for evaluation and calibration.
        """
        indices = range(len(self)) if indices is None else indices
        h, w = self.input_size
        out = np.empty((len(indices), 3, h, w), dtype=np.float32)
        for k, i in enumerate(indices):
            out[k] = _to_chw(self.view(int(i), augment=False))
        return out

    def validate(self, max_items: int | None = None) -> int:
        """Decode every file (or the first ``max_items``) now rather than mid-training.

        Returns:
            The number of files checked.

        Raises:
            DataError: naming every file that failed (the first 10 of them).
        """
        count = len(self) if max_items is None else min(len(self), max(0, int(max_items)))
        bad = []
        for i in range(count):
            try:
                self.read_image(i)
            except DataError as exc:
                bad.append(str(exc))
        if bad:
            raise DataError(f"{len(bad)} of {count} images in {self.split_dir} cannot be "
                            f"decoded:\n  " + "\n  ".join(bad[:10]))
        return count

    def __repr__(self) -> str:
        return (f"ImageFolderDataset({str(self.split_dir)!r}, {len(self)} images, "
                f"{self.num_classes} classes, input_size={self.input_size}, train={self.train})")
