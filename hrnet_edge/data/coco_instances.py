"""COCO instances (object detection) dataset: letterboxed images and padded box targets.

Reads real COCO ``instances_*.json`` files and the synthetic ones
(:mod:`hrnet_edge.data.synthetic_det`) alike. COCO category ids (not contiguous: 1..90
with gaps in COCO) are mapped to class indices 0..C-1 in id order.

Geometry: an image is scaled by ``s = min(H/h, W/w)`` and placed at the TOP-LEFT of
the (H, W) input, padded right and bottom with grey 114, so a box in input pixels maps
back to the original image by dividing by ``s`` alone (no offset to undo). Boxes are
continuous ``[x1, y1, x2, y2]`` with pixel edges at integers, as COCO's ``[x, y, w,
h]``. Images come out as float32 CHW RGB in 0..1 (normalization lives in the model),
targets as fixed-size float32 (max_objects, 6) arrays padded with -1 rows, so torch's
default collate stacks them. No torch import: checking exported models needs none.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
from PIL import Image

from hrnet_edge.data.coco_keypoints import check_annotation_keys, check_file_name, load_coco_json, quiet_coco
from hrnet_edge.data.seg_io import decode_image
from hrnet_edge.errors import ConfigError, DataError

PAD_VALUE = 114
_ANN_KEYS = ("id", "image_id", "category_id", "bbox")
# Training drops a box that the crop cuts below this share of its area or size.
MIN_KEPT_FRACTION, MIN_KEPT_SIDE = 0.25, 2.0


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _read_categories(data: dict, path: Path) -> tuple[list[int], list[str]]:
    """(COCO ids sorted, names) of the file's categories."""
    cats = data.get("categories")
    if not isinstance(cats, list) or not cats:
        raise DataError(f"{path}: lacks a non-empty 'categories' list (each {{'id': int, "
                        f"'name': str}}), which an instances file needs")
    names: dict[int, str] = {}
    for c in cats:
        if not isinstance(c, dict) or not _is_int(c.get("id")) or not isinstance(c.get("name"), str):
            raise DataError(f"{path}: category {str(c)[:120]} must be an object with an integer "
                            f"'id' and a string 'name'")
        if c["id"] in names:
            raise DataError(f"{path}: category id {c['id']} appears twice; ids must be unique")
        names[c["id"]] = c["name"]
    ids = sorted(names)
    return ids, [names[i] for i in ids]


def _read_images(data: dict, path: Path) -> dict[int, dict]:
    """Image entries by id, in file order, with ids, names and sizes checked."""
    images: dict[int, dict] = {}
    for im in data["images"]:
        iid = im["id"]
        if not _is_int(iid):
            raise DataError(f"{path}: image id {iid!r} is not an integer")
        if iid in images:
            raise DataError(f"{path}: image id {iid} appears twice; ids must be unique")
        check_file_name(im["file_name"], iid, path)
        for key in ("width", "height"):
            if key in im and not (_is_int(im[key]) and im[key] > 0):
                raise DataError(f"{path}: image {iid} has {key} {im[key]!r}; valid: a positive "
                                f"integer (or no {key!r} at all)")
        images[iid] = im
    return images


def _parse_bbox(ann: dict, path: Path) -> tuple[float, float, float, float]:
    box = ann["bbox"]
    ok = isinstance(box, (list, tuple)) and len(box) == 4 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box)
    if not ok:
        raise DataError(f"{path}: annotation {ann['id']} has bbox {str(box)[:80]}; valid: "
                        f"[x, y, w, h], 4 finite numbers")
    x, y, w, h = (float(v) for v in box)
    if w < 0 or h < 0:
        raise DataError(f"{path}: annotation {ann['id']} has bbox {box} with a negative width "
                        f"or height; valid: w >= 0 and h >= 0")
    return x, y, w, h


def _parse_annotation(ann: Any, path: Path, images: dict, cat_index: dict) -> tuple | str:
    """(image id, [x1, y1, x2, y2], class index, iscrowd), or why the box is dropped.

    Raises:
        DataError: the annotation is malformed or refers to an unknown image or category.
    """
    check_annotation_keys(ann, path, _ANN_KEYS)
    if not _is_int(ann["id"]):
        raise DataError(f"{path}: annotation id {ann['id']!r} is not an integer")
    x, y, w, h = _parse_bbox(ann, path)
    if not _is_int(ann["category_id"]) or ann["category_id"] not in cat_index:
        raise DataError(f"{path}: annotation {ann['id']} has category_id {ann['category_id']!r}, "
                        f"which is not in 'categories' (valid: {sorted(cat_index)})")
    image = images.get(ann["image_id"]) if _is_int(ann["image_id"]) else None
    if image is None:
        raise DataError(f"{path}: annotation {ann['id']} refers to image {ann['image_id']!r}, "
                        f"which is not in 'images'")
    crowd = ann.get("iscrowd", 0)
    if crowd not in (0, 1):
        raise DataError(f"{path}: annotation {ann['id']} has iscrowd {crowd!r}; valid: 0 or 1")
    if w < 1 or h < 1:
        return "degenerate"
    x1, y1, x2, y2 = max(0.0, x), max(0.0, y), x + w, y + h
    x2, y2 = min(x2, image.get("width", x2)), min(y2, image.get("height", y2))
    if x2 - x1 < 1 or y2 - y1 < 1:
        return "outside_image"
    return ann["image_id"], (x1, y1, x2, y2), cat_index[ann["category_id"]], int(crowd)


class CocoInstances:
    """Map-style detection dataset over a COCO instances file.

    Works with a torch ``DataLoader`` as it is (items are NumPy arrays of fixed shape)
    but imports no torch. Images without annotations are kept: they are negatives.

    Args:
        ann_file: ``instances_*.json``.
        image_dir: folder holding the images named by ``file_name``.
        input_size: (H, W) of every image returned.
        train: augment (random scale on top of the letterbox scale, random placement or
            crop, horizontal flip); else letterbox only.
        scale_range: (min, max) of the random scale factor in train mode.
        flip: random horizontal flip (p = 0.5) in train mode.
        max_objects: rows of the target array; further boxes are left out (crowd
            regions first).
        seed: augmentation seed; item ``i`` at epoch ``e`` always gets the same draw.

    Attributes:
        category_ids: class index -> COCO category id.
        class_names: class index -> name.
        num_classes: number of categories.
        image_ids: item index -> COCO image id.
        summary: counts of images, annotations, crowd regions, negatives (images
            without boxes) and ``dropped`` boxes by reason.

    Raises:
        DataError: malformed JSON, an unknown image or category, an unsafe file name or
            missing image files.
        ConfigError: invalid input_size, scale_range, max_objects or seed.
    """

    def __init__(self, ann_file: str | os.PathLike, image_dir: str | os.PathLike,
                 input_size: tuple[int, int] = (512, 512), train: bool = False,
                 scale_range: tuple[float, float] = (0.75, 1.25), flip: bool = True,
                 max_objects: int = 100, seed: int = 0):
        self.ann_file, self.image_dir = Path(ann_file), Path(image_dir)
        self._check_config(input_size, scale_range, max_objects, seed)
        self.train, self.flip, self.epoch = bool(train), bool(flip), 0
        self.data = load_coco_json(self.ann_file)
        self.category_ids, self.class_names = _read_categories(self.data, self.ann_file)
        self.num_classes = len(self.category_ids)
        self.images = _read_images(self.data, self.ann_file)
        self.image_ids = list(self.images)
        self._read_annotations()
        self._check_files()
        self._sizes: dict[int, tuple[int, int]] = {}
        self._coco = None
        self._decoded: list[np.ndarray] | None = None  # see keep_in_memory

    def _check_config(self, input_size, scale_range, max_objects, seed) -> None:
        if len(input_size) != 2 or min(int(v) for v in input_size) < 1:
            raise ConfigError(f"input_size must be (H, W) with positive sides, got {input_size}")
        self.input_size = (int(input_size[0]), int(input_size[1]))
        lo, hi = (float(v) for v in scale_range)
        if not 0 < lo <= hi:
            raise ConfigError(f"scale_range must be (min, max) with 0 < min <= max, got {scale_range}")
        if int(max_objects) < 1 or int(seed) < 0:
            raise ConfigError(f"max_objects must be >= 1 and seed >= 0, got {max_objects}, {seed}")
        self.scale_range, self.max_objects, self.seed = (lo, hi), int(max_objects), int(seed)

    def _read_annotations(self) -> None:
        cat_index = {cid: k for k, cid in enumerate(self.category_ids)}
        per_image: dict[int, list] = {iid: [] for iid in self.images}
        dropped = {"degenerate": 0, "outside_image": 0}
        seen: set = set()
        for ann in self.data["annotations"]:
            parsed = _parse_annotation(ann, self.ann_file, self.images, cat_index)
            if ann["id"] in seen:
                raise DataError(f"{self.ann_file}: annotation id {ann['id']} appears twice; "
                                f"ids must be unique")
            seen.add(ann["id"])
            if isinstance(parsed, str):
                dropped[parsed] += 1
            else:
                per_image[parsed[0]].append(parsed[1:])
        self._anns = []
        for iid in self.image_ids:
            rows = per_image[iid]
            self._anns.append((np.array([r[0] for r in rows], np.float32).reshape(-1, 4),
                               np.array([r[1] for r in rows], np.int64),
                               np.array([r[2] for r in rows], np.int64)))
        crowd = sum(int(c.sum()) for _, _, c in self._anns)
        kept = sum(len(b) for b, _, _ in self._anns)
        self.summary = {"images": len(self.image_ids), "annotations": kept, "crowd": crowd,
                        "negatives": sum(1 for b, _, _ in self._anns if not len(b)),
                        "dropped": dropped}

    def _check_files(self) -> None:
        missing = sorted({im["file_name"] for im in self.images.values()
                          if not (self.image_dir / im["file_name"]).is_file()})
        if missing:
            raise DataError(f"{len(missing)} image file(s) referenced by {self.ann_file} are "
                            f"missing from {self.image_dir}, e.g. {missing[:3]}")

    def __len__(self) -> int:
        return len(self.image_ids)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draw of ``epoch`` (call once per epoch when training).

        DataLoader workers copy the dataset when an epoch starts, so this reaches them
        unless ``persistent_workers`` keeps old copies alive.
        """
        self.epoch = int(epoch)

    @property
    def coco(self):
        """pycocotools ``COCO`` over the loaded annotations (built once, quietly)."""
        if self._coco is None:
            self._coco = quiet_coco(self.data)
        return self._coco

    def path(self, i: int) -> Path:
        """File of item ``i``."""
        return self.image_dir / self.images[self.image_ids[i]]["file_name"]

    def keep_in_memory(self, max_bytes: int) -> int:
        """Decode every image now and serve later reads from memory, when the decoded
        pixels fit in ``max_bytes``.

        Training reads each image once per epoch; decoding is most of a training item's
        cost, and on a small machine the loader's decoding competes with the training
        step for the cores. The kept arrays are read-only, and DataLoader workers forked
        afterwards share them.

        Returns:
            The bytes kept, or 0 when the split is larger than ``max_bytes`` (nothing
            is decoded then; reads go to the files as before).

        Raises:
            DataError: an image cannot be decoded (as :meth:`read_image`).
        """
        need = sum(h * w * 3 for h, w in (self._orig_hw(i) for i in range(len(self))))
        if need > max_bytes:
            return 0
        self._decoded = None
        images = [self.read_image(i) for i in range(len(self))]
        for img in images:
            img.setflags(write=False)
        self._decoded = images
        return need

    def read_image(self, i: int) -> np.ndarray:
        """Image of item ``i`` as uint8 HxWx3 RGB at its original size (read-only when
        :meth:`keep_in_memory` holds it).

        Raises:
            DataError: the file is missing or corrupt, or its size differs from the
                ``width``/``height`` the annotation file gives.
        """
        if self._decoded is not None:
            return self._decoded[i]
        img = decode_image(self.path(i))
        im = self.images[self.image_ids[i]]
        want = (im.get("height", img.shape[0]), im.get("width", img.shape[1]))
        if img.shape[:2] != want:
            raise DataError(f"image {self.path(i)} (id {im['id']}) is {img.shape[1]}x{img.shape[0]} "
                            f"but {self.ann_file} gives {want[1]}x{want[0]} (WxH); its boxes "
                            f"would not fit it")
        return img

    def _orig_hw(self, i: int) -> tuple[int, int]:
        """(h, w) from the annotation file, else from the image header."""
        im = self.images[self.image_ids[i]]
        if "width" in im and "height" in im:
            return im["height"], im["width"]
        if i not in self._sizes:
            try:
                with Image.open(self.path(i)) as pil:
                    self._sizes[i] = (pil.size[1], pil.size[0])
            except Exception:  # unreadable: decoding names the problem
                self._sizes[i] = self.read_image(i).shape[:2]
        return self._sizes[i]

    def _scale(self, hw: tuple[int, int]) -> float:
        return min(self.input_size[0] / hw[0], self.input_size[1] / hw[1])

    def letterbox_info(self, i: int) -> dict:
        """How item ``i`` sits in the input: original boxes = input boxes / ``scale``.

        Returns:
            dict with ``image_id``, ``orig_hw`` (h, w), ``scale`` and ``pad`` (always
            (0, 0): the image sits at the top-left).
        """
        hw = self._orig_hw(i)
        return {"image_id": self.image_ids[i], "orig_hw": tuple(hw), "scale": self._scale(hw),
                "pad": (0, 0)}

    def instances(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(boxes (n, 4) xyxy in original pixels, class indices (n,), iscrowd (n,)) of item ``i``."""
        boxes, labels, crowd = self._anns[i]
        return boxes.copy(), labels.copy(), crowd.copy()

    def _place(self, img: np.ndarray, scale: float, ox: int, oy: int) -> np.ndarray:
        """``img`` scaled by ``scale`` with its top-left at (ox, oy) of a grey frame."""
        (h, w), (fh, fw) = img.shape[:2], self.input_size
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        if (nh, nw) != (h, w):
            img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
        frame = np.full((fh, fw, 3), PAD_VALUE, np.uint8)
        fx0, fy0, fx1, fy1 = max(0, ox), max(0, oy), min(fw, ox + nw), min(fh, oy + nh)
        if fx0 < fx1 and fy0 < fy1:
            frame[fy0:fy1, fx0:fx1] = img[fy0 - oy:fy1 - oy, fx0 - ox:fx1 - ox]
        return frame

    def _augment(self, i: int, img: np.ndarray, boxes: np.ndarray):
        """Random scale, placement or crop, and flip; returns (frame, boxes, kept mask)."""
        rng = np.random.default_rng([self.seed, self.epoch, i])
        (h, w), (fh, fw) = img.shape[:2], self.input_size
        s = self._scale((h, w)) * rng.uniform(*self.scale_range)
        nh, nw = max(1, round(h * s)), max(1, round(w * s))
        # Offset of the scaled image in the frame: >= 0 places it, < 0 crops it.
        ox = int(rng.integers(min(0, fw - nw), max(0, fw - nw) + 1))
        oy = int(rng.integers(min(0, fh - nh), max(0, fh - nh) + 1))
        # Drawn even when flip is off, so both settings see the same scale and placement.
        flipped = bool(rng.random() < 0.5) and self.flip
        frame = self._place(img, s, ox, oy)
        boxes = boxes * np.float32(s) + np.array([ox, oy, ox, oy], np.float32)
        if flipped:
            frame = frame[:, ::-1]
            boxes = np.stack([fw - boxes[:, 2], boxes[:, 1], fw - boxes[:, 0], boxes[:, 3]], 1)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        boxes = self._clip(boxes)
        bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        keep = (bw >= MIN_KEPT_SIDE) & (bh >= MIN_KEPT_SIDE) & (bw * bh >= MIN_KEPT_FRACTION * area)
        return frame, boxes, keep

    def _clip(self, boxes: np.ndarray) -> np.ndarray:
        fh, fw = self.input_size
        return np.clip(boxes, 0, np.array([fw, fh, fw, fh], np.float32)).astype(np.float32)

    def _pack(self, boxes: np.ndarray, labels: np.ndarray, crowd: np.ndarray) -> np.ndarray:
        """(max_objects, 6) rows [x1, y1, x2, y2, class, iscrowd], padded with -1."""
        out = np.full((self.max_objects, 6), -1, np.float32)
        order = np.argsort(crowd, kind="stable")[:self.max_objects]  # objects before crowds
        n = len(order)
        out[:n, :4], out[:n, 4], out[:n, 5] = boxes[order], labels[order], crowd[order]
        return out

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Item ``i``: (float32 3xHxW RGB in 0..1, float32 (max_objects, 6) targets)."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} items")
        i %= len(self)
        img = self.read_image(i)
        boxes, labels, crowd = self._anns[i]
        if self.train:
            frame, boxes, keep = self._augment(i, img, boxes)
            boxes, labels, crowd = boxes[keep], labels[keep], crowd[keep]
        else:
            s = self._scale(img.shape[:2])
            frame, boxes = self._place(img, s, 0, 0), self._clip(boxes * np.float32(s))
        image = np.ascontiguousarray(frame.transpose(2, 0, 1), dtype=np.float32) / np.float32(255)
        return image, self._pack(boxes, labels, crowd)

    def stack_images(self, indices: Sequence[int] | None = None) -> np.ndarray:
        """(N, 3, H, W) float32 letterboxed images in 0..1 of ``indices`` (default: all),
        without augmentation: what evaluation and calibration feed a model."""
        indices = range(len(self)) if indices is None else indices
        out = np.empty((len(indices), 3) + self.input_size, np.float32)
        for k, i in enumerate(indices):
            img = self.read_image(int(i))
            frame = self._place(img, self._scale(img.shape[:2]), 0, 0)
            out[k] = frame.transpose(2, 0, 1) / np.float32(255)
        return out

    def validate(self, max_items: int | None = None) -> dict:
        """Decode the first ``max_items`` images (all by default) and report bad ones.

        Returns:
            dict with ``items`` (number checked), ``ok`` and ``bad``: a list of
            ``{"image_id", "file", "error"}`` for images that are unreadable or whose
            size differs from the annotation file's.
        """
        n = len(self) if max_items is None else max(0, min(len(self), int(max_items)))
        bad = []
        for i in range(n):
            try:
                self.read_image(i)
            except DataError as exc:
                bad.append({"image_id": self.image_ids[i], "file": str(self.path(i)),
                            "error": str(exc)})
        return {"items": n, "ok": n - len(bad), "bad": bad}


def load_coco_instances(root: str | os.PathLike, split: str, input_size: tuple[int, int],
                        train: bool = False, scale_range: tuple[float, float] = (0.75, 1.25),
                        flip: bool = True, seed: int = 0, max_objects: int = 100) -> CocoInstances:
    """The ``split`` of a COCO-layout folder as a :class:`CocoInstances`.

    Layout: ``<root>/annotations/instances_<split>.json`` with images in
    ``<root>/images/<split>/`` (as the synthetic generator writes) or, as COCO itself
    ships, ``<root>/<split>/``.

    Raises:
        DataError: the annotation file or image folder is missing (naming what is
            expected), or the dataset is malformed.
    """
    root = Path(root)
    ann = root / "annotations" / f"instances_{split}.json"
    img_dir = root / "images" / split
    if not img_dir.is_dir() and (root / split).is_dir():
        img_dir = root / split
    if not ann.is_file() or not img_dir.is_dir():
        raise DataError(f"no COCO instances split {split!r} in {root}: expected {ann} and the "
                        f"image folder {root / 'images' / split} (or {root / split})")
    return CocoInstances(ann, img_dir, input_size, train=train, scale_range=scale_range,
                         flip=flip, max_objects=max_objects, seed=seed)
