"""Top-down COCO keypoints dataset: one sample per annotated person.

Reads real COCO ``person_keypoints_*.json`` files and the synthetic ones alike. Each
sample is the person's box, padded by 1.25 and widened or heightened to the input's
aspect ratio, cropped with ``cv2.warpAffine`` (see :mod:`hrnet_edge.data.heatmaps` for
the coordinate conventions). Images come out as float32 CHW RGB in 0..1: normalization
lives inside the model graph, so exported models take what an app has.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
from collections import Counter
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Sequence

import cv2
import numpy as np

from hrnet_edge.data.heatmaps import (compose_affine, affine_points, gaussian_targets,
                                      get_affine_transform, hflip_affine, warp_crop)
from hrnet_edge.data.keypoints import (CROP_PADDING, FLIP_PAIRS, KEYPOINT_NAMES, OKS_SIGMAS, PERSON_CATEGORY_ID,
                                       flip_permutation)
from hrnet_edge.errors import DataError

PADDING = CROP_PADDING
_ANN_KEYS = ("id", "image_id", "keypoints", "bbox")


def load_coco_json(ann_file: str | os.PathLike) -> dict:
    """Read and validate a COCO keypoints annotation file.

    Raises:
        DataError: the file is missing, is not JSON, or lacks required keys.
    """
    path = Path(ann_file)
    if not path.is_file():
        raise DataError(f"annotation file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"annotation file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DataError(f"annotation file {path} must hold a JSON object, "
                        f"got {type(data).__name__}")
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise DataError(f"annotation file {path} lacks the list {key!r} (a COCO file has "
                            f"'images', 'annotations' and 'categories')")
    for im in data["images"]:
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            raise DataError(f"{path}: every image needs 'id' and 'file_name', got {str(im)[:120]}")
    return data


def quiet_coco(data: dict):
    """A pycocotools ``COCO`` over the loaded ``data`` dict, built without its prints."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def check_annotation_keys(ann: Any, path: Path, keys: tuple[str, ...]) -> None:
    """DataError unless ``ann`` is an object holding every one of ``keys``."""
    if not isinstance(ann, dict):
        raise DataError(f"{path}: an annotation is not an object: {str(ann)[:120]}")
    missing = [k for k in keys if k not in ann]
    if missing:
        raise DataError(f"{path}: annotation {ann.get('id', '?')} lacks {missing} "
                        f"(required: {list(keys)})")


def _finite_numbers(values: Any) -> bool:
    return isinstance(values, (list, tuple)) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)


def _validate_annotation(ann: Any, path: Path, num_joints: int) -> None:
    check_annotation_keys(ann, path, _ANN_KEYS)
    kps, box = ann["keypoints"], ann["bbox"]
    if not _finite_numbers(kps):
        raise DataError(f"{path}: annotation {ann['id']} has keypoints {str(kps)[:80]}; valid: a list "
                        f"of finite numbers [x1, y1, v1, x2, ...] (no NaN, text or null)")
    if len(kps) != 3 * num_joints:
        raise DataError(f"{path}: annotation {ann['id']} has {len(kps)} keypoint "
                        f"values, expected {3 * num_joints} ([x, y, v] for {num_joints} keypoints)")
    if any(v not in (0, 1, 2) for v in kps[2::3]):
        raise DataError(f"{path}: annotation {ann['id']} has keypoint visibilities {list(kps[2::3])}; "
                        f"valid: 0 (not labelled), 1 (labelled, hidden) or 2 (visible)")
    if not _finite_numbers(box) or len(box) != 4:
        raise DataError(f"{path}: annotation {ann['id']} bbox must be [x, y, w, h], 4 finite "
                        f"numbers, got {str(box)[:80]}")


def check_file_name(name: Any, image_id: Any, path: Path) -> None:
    """DataError unless ``name`` is a non-empty path relative to the image folder that
    stays inside it (no absolute path, no '..')."""
    if not isinstance(name, str) or not name:
        raise DataError(f"{path}: image {image_id} has file_name {name!r}; valid: a non-empty "
                        f"path relative to the image folder")
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or PureWindowsPath(name).is_absolute() or ".." in posix.parts:
        raise DataError(f"{path}: image {image_id} has file_name {name!r}, which is absolute or "
                        f"leaves the image folder ('..'); valid: a path relative to the image "
                        f"folder, e.g. '000000000139.jpg'")


def verify_image(path: Path) -> None:
    """DataError unless ``path`` decodes completely (a truncated JPEG fails here; OpenCV
    would fill the missing rows with grey and say nothing)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
    except (OSError, ValueError, SyntaxError) as exc:  # PIL raises these for bad files
        raise DataError(f"image {path} cannot be decoded ({exc}); it is truncated, corrupt or "
                        "not an image: replace or remove it") from None


def box_to_center_scale(bbox: Sequence[float], aspect: float,
                        padding: float = PADDING) -> tuple[np.ndarray, np.ndarray]:
    """Centre (x, y) and crop size (w, h) of a COCO box, at aspect ``w/h`` with padding."""
    x, y, w, h = (float(v) for v in bbox)
    center = np.array([x + w * 0.5, y + h * 0.5], dtype=np.float32)
    # Grow the short side so the crop keeps the input's aspect ratio undistorted.
    if w > aspect * h:
        h = w / aspect
    else:
        w = h * aspect
    return center, np.array([w * padding, h * padding], dtype=np.float32)


class CocoKeypoints:
    """Top-down pose dataset over a COCO keypoints file.

    A map-style dataset (``__len__``/``__getitem__``) that a torch ``DataLoader`` takes
    as it is; it does not import torch, so checking an exported model needs no torch.

    Args:
        ann_file: ``person_keypoints_*.json``.
        image_dir: folder holding the images named by ``file_name``.
        input_size: (H, W) of the model input; heatmaps are (H/4, W/4).
        train: enable augmentation (random scale, rotation, horizontal flip).
        sigma: Gaussian sigma of the targets, in heatmap pixels.
        scale_factor: std of the random scale (clipped to +-1 std).
        rotation: std of the random rotation in degrees (clipped to +-2 std), applied
            to 60% of samples as in the HRNet recipe.
        flip: random horizontal flip in train mode.
        cache_images: keep decoded images in memory (small datasets only).
        seed: seed of the augmentation generator (DataLoader workers also mix in
            torch's per-worker seed).

    Raises:
        DataError: malformed annotations or missing image files.
    """

    def __init__(self, ann_file: str | os.PathLike, image_dir: str | os.PathLike,
                 input_size: tuple[int, int] = (256, 192), train: bool = False, sigma: float = 2.0,
                 scale_factor: float = 0.35, rotation: float = 40.0, flip: bool = True,
                 cache_images: bool = False, seed: int | None = None):
        self.ann_file = Path(ann_file)
        self.image_dir = Path(image_dir)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        if self.input_size[0] % 4 or self.input_size[1] % 4:
            raise DataError(f"input_size must be multiples of 4, got {input_size}")
        self.heatmap_size = (self.input_size[0] // 4, self.input_size[1] // 4)
        self.aspect = self.input_size[1] / self.input_size[0]
        self.train, self.sigma, self.flip = bool(train), float(sigma), bool(flip)
        self.scale_factor, self.rotation = float(scale_factor), float(rotation)
        self.cache_images = cache_images
        self._cache: dict[int, np.ndarray] = {}
        self._seed = 0 if seed is None else int(seed)
        self._rng = np.random.default_rng(seed)
        self._rng_key: tuple[int, int] | None = None
        self.data = load_coco_json(self.ann_file)
        self.keypoint_names, self.skeleton = self._read_category()
        self.num_joints = len(self.keypoint_names)
        pairs = FLIP_PAIRS if self.num_joints == len(KEYPOINT_NAMES) else ()
        self.flip_perm = flip_permutation(self.num_joints, pairs)
        self.sigmas = OKS_SIGMAS if self.num_joints == 17 else np.full(self.num_joints, 0.05)
        self.images = {im["id"]: im for im in self.data["images"]}
        for iid, im in self.images.items():
            check_file_name(im["file_name"], iid, self.ann_file)
        self.dropped: Counter = Counter()  # annotations left out, by reason
        self.instances = self._read_instances()
        self._coco = None

    def _read_category(self) -> tuple[list[str], list[list[int]]]:
        for cat in self.data.get("categories", []):
            if cat.get("id") == PERSON_CATEGORY_ID and cat.get("keypoints"):
                return list(cat["keypoints"]), [[a - 1, b - 1] for a, b in cat.get("skeleton", [])]
        return list(KEYPOINT_NAMES), []

    def _read_instances(self) -> list[dict]:
        instances = []
        for ann in self.data["annotations"]:
            _validate_annotation(ann, self.ann_file, self.num_joints)
            is_person = ann.get("category_id", PERSON_CATEGORY_ID) == PERSON_CATEGORY_ID
            if not is_person or ann.get("iscrowd", 0):
                self.dropped["not a person" if not is_person else "crowd region"] += 1
                continue
            kps = np.asarray(ann["keypoints"], dtype=np.float32).reshape(-1, 3)
            if int(ann.get("num_keypoints", (kps[:, 2] > 0).sum())) == 0 or not (kps[:, 2] > 0).any():
                self.dropped["no labelled keypoint"] += 1
                continue
            image = self.images.get(ann["image_id"])
            if image is None:
                raise DataError(f"{self.ann_file}: annotation {ann['id']} refers to image "
                                f"{ann['image_id']}, which is not in 'images'")
            if not self._keypoints_inside(kps, image):
                self.dropped["every labelled keypoint outside its image"] += 1
                continue
            box = self._clip_box(ann["bbox"], image)
            if box is None:
                self.dropped["empty box or box outside its image"] += 1
                continue
            center, scale = box_to_center_scale(box, self.aspect)
            instances.append({"image_id": ann["image_id"], "ann_id": ann["id"],
                              "joints": kps[:, :2],
                              "vis": kps[:, 2].copy(), "bbox": np.asarray(box, np.float32),
                              "center": center, "scale": scale,
                              "area": float(ann.get("area", box[2] * box[3]))})
        names = {self.images[i["image_id"]]["file_name"] for i in instances}
        missing = sorted(n for n in names if not (self.image_dir / n).is_file())
        if missing:
            raise DataError(f"{len(missing)} image file(s) referenced by {self.ann_file} are "
                            f"missing from {self.image_dir}, e.g. {missing[:3]}")
        return instances

    @staticmethod
    def _keypoints_inside(kps: np.ndarray, image: dict) -> bool:
        """Whether a labelled keypoint lies inside the image (True when its size is unknown)."""
        width, height = image.get("width"), image.get("height")
        if not (isinstance(width, (int, float)) and isinstance(height, (int, float))):
            return True
        lab = kps[kps[:, 2] > 0]
        inside = (lab[:, 0] >= 0) & (lab[:, 0] < width) & (lab[:, 1] >= 0) & (lab[:, 1] < height)
        return bool(inside.any())

    def image_paths(self) -> list[Path]:
        """The image files this dataset reads, each once, in name order."""
        return sorted({self.image_dir / self.images[i["image_id"]]["file_name"] for i in self.instances})

    @staticmethod
    def _clip_box(bbox, image) -> list[float] | None:
        """Clip an [x, y, w, h] box to the image; None when nothing is left."""
        x, y, w, h = (float(v) for v in bbox)
        width, height = image.get("width"), image.get("height")
        # Clip the box's own corners (HRNet's code clips x and then adds w, which shifts
        # boxes that start left of the image to the right).
        x1, y1 = max(0.0, x), max(0.0, y)
        x2, y2 = x + max(0.0, w - 1), y + max(0.0, h - 1)
        if width is not None and height is not None:
            x2, y2 = min(width - 1.0, x2), min(height - 1.0, y2)
        if w <= 0 or h <= 0 or x2 < x1 or y2 < y1:
            return None
        return [x1, y1, x2 - x1 + 1, y2 - y1 + 1]

    @property
    def coco(self):
        """pycocotools ``COCO`` object over the same annotations (built once, quietly)."""
        if self._coco is None:
            self._coco = quiet_coco(self.data)
        return self._coco

    def __len__(self) -> int:
        return len(self.instances)

    def read_image(self, image_id: int) -> np.ndarray:
        """RGB uint8 HWC image of ``image_id``."""
        if image_id in self._cache:
            return self._cache[image_id]
        path = self.image_dir / self.images[image_id]["file_name"]
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise DataError(f"cannot read image {path} (missing or not an image)")
        rgb = np.ascontiguousarray(bgr[..., ::-1])
        if self.cache_images:
            self._cache[image_id] = rgb
        return rgb

    def _augment(self, rng: np.random.Generator) -> tuple[float, float, bool]:
        sf, rf = self.scale_factor, self.rotation
        s = float(np.clip(rng.normal() * sf + 1.0, 1.0 - sf, 1.0 + sf))
        r = float(np.clip(rng.normal() * rf, -2 * rf, 2 * rf)) if rng.random() <= 0.6 else 0.0
        return s, r, bool(self.flip and rng.random() < 0.5)

    def crop(self, index: int, augment: bool = False, rng: np.random.Generator | None = None):
        """Crop of instance ``index``: (uint8 HWC RGB, joints in input coords, vis, rotation).

        With ``augment`` a random scale, rotation and flip are applied; a flip mirrors
        the crop and swaps left/right keypoints.
        """
        inst = self.instances[index]
        s, r, flipped = self._augment(rng or self._aug_rng()) if augment else (1.0, 0.0, False)
        mat = get_affine_transform(inst["center"], inst["scale"] * s, r, self.input_size)
        if flipped:
            mat = compose_affine(hflip_affine(self.input_size[1]), mat)
        crop = warp_crop(self.read_image(inst["image_id"]), mat, self.input_size)
        joints = affine_points(inst["joints"], mat).astype(np.float32)
        vis = inst["vis"].copy()
        if flipped:
            joints, vis = joints[self.flip_perm], vis[self.flip_perm]
        return crop, joints, vis, r

    def __getitem__(self, index: int):
        crop, joints, vis, rot = self.crop(index, augment=self.train)
        target, weight = gaussian_targets(joints, vis, self.input_size, self.heatmap_size,
                                          self.sigma)
        inst = self.instances[index]
        image = np.ascontiguousarray(crop.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)
        meta = {"image_id": int(inst["image_id"]), "center": inst["center"].copy(),
                "scale": inst["scale"].copy(), "rotation": float(rot), "area": float(inst["area"]),
                "bbox": inst["bbox"].copy(), "index": int(index)}
        return image, target, weight, meta

    def stack_images(self, indices: Sequence[int] | None = None) -> np.ndarray:
        """Un-augmented crops of ``indices`` (default: all) as NCHW float32 RGB in 0..1.

        Used for calibration and for evaluating exported models, which all take this layout.
        """
        indices = range(len(self)) if indices is None else indices
        h, w = self.input_size
        out = np.empty((len(indices), 3, h, w), dtype=np.float32)
        for k, i in enumerate(indices):
            out[k] = self.crop(int(i))[0].transpose(2, 0, 1) / np.float32(255.0)
        return out

    def instance_arrays(self) -> dict[str, np.ndarray]:
        """Per-instance eval metadata: image_id, center, scale, bbox, area, joints, vis."""
        keys = ("image_id", "center", "scale", "bbox", "area", "joints", "vis")
        return {k: np.asarray([inst[k] for inst in self.instances]) for k in keys}

    def set_epoch(self, epoch: int) -> None:
        """Draw this epoch's augmentation from its own seed (in the loading process), so a
        run resumed at ``epoch`` augments exactly as an uninterrupted one. Epoch 0 keeps
        the constructor's stream; DataLoader workers reseed from torch's per-epoch seed."""
        self._rng = np.random.default_rng(self._seed if epoch == 0 else [self._seed, epoch])
        self._rng_key = None

    def _aug_rng(self) -> np.random.Generator:
        """The augmentation generator; each DataLoader worker reseeds from torch's seed.

        Forked workers would otherwise all inherit one generator state and repeat each
        other's augmentations.
        """
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        key = None if info is None else (info.id, info.seed)
        if key != self._rng_key:
            self._rng = np.random.default_rng([self._seed, info.seed % 2**63])
            self._rng_key = key
        return self._rng
