"""``--labels``: the task metric of an artifact on a labelled folder of pictures.

The pictures are the ``.jpg``/``.jpeg``/``.png`` files directly in ``--images`` (as the
timed runs read them); the labels and the folder must name the same pictures. Per task
(the artifact's ``metadata.json`` says which):

=====  ==========================================  ========================================
task   ``--labels``                                how each picture is fed and scored
=====  ==========================================  ========================================
pose   a COCO ``person_keypoints`` JSON            every person box is cropped as the host
                                                   checks crop it (grown to the input aspect,
                                                   padded by ``output.person_crop.padding``,
                                                   bilinear affine warp), flip-tested when
                                                   ``output.decoding.flip_test_in_checks``;
                                                   OKS AP with pycocotools, PCK
det    a COCO ``instances`` JSON                   letterboxed (top-left, grey 114), boxes
                                                   mapped back, class indices mapped to the
                                                   metadata's ``output.category_ids``; box AP
                                                   with pycocotools
seg    a folder of index PNG masks,                resized to the input (bilinear, the mask
       ``<picture stem>.png``                      exact-centre nearest), flip-tested when
                                                   the metadata says so; mIoU over one
                                                   confusion matrix, ``output.ignore_index``
                                                   pixels left out
cls    a CSV ``file,label`` or a JSON object       resize + centre crop (``task_info.resize_
       ``{"file": label}``; a label is a class     ratio``, default 0.875); top-1 / top-5
       name of ``output.classes`` or its index
=====  ==========================================  ========================================

Which pixels the model sees follows the host's evaluation transforms, reproduced
without OpenCV in :mod:`hrnet_edge_runtime.transforms`. The metric keys are the host
check rows' (:mod:`hrnet_edge_runtime.metrics`).
"""
from __future__ import annotations

import csv
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from hrnet_edge_runtime import metrics as M
from hrnet_edge_runtime.decode import DetDecoder, PoseDecoder, SegDecoder, box_to_crop
from hrnet_edge_runtime.decode import _meta
from hrnet_edge_runtime.decode.pose import CROP_PADDING, get_affine_transform
from hrnet_edge_runtime.errors import ArtifactError, LabelsError, RuntimeUnavailable, require
from hrnet_edge_runtime.inputs import IMAGE_SUFFIXES, pixels_to_input, read_image
from hrnet_edge_runtime.metadata import Artifact
from hrnet_edge_runtime.transforms import (LETTERBOX_PAD, center_crop_view, letterbox, resize_bilinear,
                                           resize_nearest, warp_affine)

RunFn = Callable[[np.ndarray], np.ndarray]
_SHOWN = 3  # names listed in an error before "..."


def _listing(names: Sequence[Any]) -> str:
    names = [str(n) for n in names]
    more = f", ... ({len(names)} in all)" if len(names) > _SHOWN else ""
    return ", ".join(names[:_SHOWN]) + more


def folder_pictures(folder: str | Path) -> dict[str, Path]:
    """The pictures directly in ``folder`` by file name.

    Raises:
        LabelsError: no such folder, or no picture in it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise LabelsError(f"--images {folder}: no such folder")
    found = {p.name: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES}
    if not found:
        raise LabelsError(f"--images {folder}: no {'/'.join(IMAGE_SUFFIXES)} files in it")
    return found


def _same_pictures(pictures: dict[str, Path], labelled: Sequence[str], labels: Path, folder: Path) -> None:
    """LabelsError unless the folder's pictures and the labelled names are the same set."""
    named = set(labelled)
    unlabelled = sorted(set(pictures) - named)
    if unlabelled:
        raise LabelsError(f"--labels {labels} has no label for {len(unlabelled)} picture(s) of --images "
                          f"{folder}: {_listing(unlabelled)}; label every picture or move it out")
    missing = sorted(named - set(pictures))
    if missing:
        raise LabelsError(f"--labels {labels} names {len(missing)} picture(s) that are not in --images "
                          f"{folder}: {_listing(missing)}")


def read_raw_rgb(path: Path) -> np.ndarray:
    """A picture as H x W x 3 uint8 RGB in its stored pixel order (EXIF orientation not
    applied), as the host's detection, segmentation and classification loaders read it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ArtifactError(f"{path}: not a readable image ({exc})") from exc


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise LabelsError(f"--labels {path}: no such file (the {what})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LabelsError(f"--labels {path}: not readable JSON ({exc}); expected the {what}") from None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _numbers(v: Any, n: int | None = None) -> bool:
    return (isinstance(v, list) and (n is None or len(v) == n)
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v))


def _coco_file(path: Path, what: str) -> tuple[dict, dict[int, dict]]:
    """A COCO annotation dict (``images``, ``annotations``, ``categories`` lists) and its
    images by id, with ids and file names checked."""
    data = _read_json(path, what)
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list)
                                             for k in ("images", "annotations", "categories")):
        raise LabelsError(f"--labels {path}: not a {what}: a JSON object with the lists 'images', "
                          "'annotations' and 'categories' is expected")
    images: dict[int, dict] = {}
    for im in data["images"]:
        if not isinstance(im, dict) or not _is_int(im.get("id")) or not isinstance(im.get("file_name"), str):
            raise LabelsError(f"--labels {path}: every image needs an integer 'id' and a 'file_name', "
                              f"got {str(im)[:100]}")
        name = im["file_name"]
        if not name or Path(name).name != name or name in (".", ".."):
            raise LabelsError(f"--labels {path}: image {im['id']} has file_name {name!r}; valid: the name of a "
                              "picture directly in --images (no folders)")
        if im["id"] in images:
            raise LabelsError(f"--labels {path}: image id {im['id']} appears twice")
        images[im["id"]] = im
    if len({im["file_name"] for im in images.values()}) != len(images):
        raise LabelsError(f"--labels {path}: two images share a file_name")
    return data, images


def _ann_key(ann: Any, path: Path, keys: Sequence[str]) -> None:
    if not isinstance(ann, dict) or any(k not in ann for k in keys):
        raise LabelsError(f"--labels {path}: an annotation lacks one of {list(keys)}: {str(ann)[:100]}")


def _for_cocoeval(data: dict) -> dict:
    """A copy whose annotations have the ``area`` and ``iscrowd`` COCOeval reads."""
    anns = []
    for a in data["annotations"]:
        a = dict(a)
        a.setdefault("iscrowd", 0)
        if "area" not in a and _numbers(a.get("bbox"), 4):
            a["area"] = float(a["bbox"][2] * a["bbox"][3])
        anns.append(a)
    return {**data, "annotations": anns}


def _need_cocoeval(task: str) -> None:
    try:
        require("pycocotools.cocoeval", "metrics")
    except RuntimeUnavailable as exc:
        raise RuntimeUnavailable(f"--labels: the {task} metric (COCO AP) needs pycocotools: {exc}") from None


class Labelled:
    """The labelled pictures of one task, checked; :meth:`evaluate` runs them."""

    task = ""
    format = ""

    def __init__(self, artifact: Artifact, images: Path, labels: Path):
        self.artifact, self.images, self.labels = artifact, Path(images), Path(labels)
        self.spec = artifact.input
        self.input_size = (self.spec.height, self.spec.width)

    def _feed(self, run: RunFn, pixels: np.ndarray) -> np.ndarray:
        return run(pixels_to_input(np.ascontiguousarray(pixels), self.spec))

    def evaluate(self, run: RunFn) -> dict[str, Any]:
        """``{"metric": {...}, "metric_name": ..., "evaluation": {...}}``; ``run`` maps the
        artifact's input array to its raw output (an adapter's ``run``)."""
        metric = M.finite_or_none(self._metric(run))
        return {"metric": metric, "metric_name": M.PRIMARY[self.task], "evaluation": self.describe()}

    def _metric(self, run: RunFn) -> dict[str, Any]:  # pragma: no cover - per task
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What was scored: the labels, their format, pictures and labels counted."""
        return {"labels": str(self.labels), "format": self.format, "images": self.num_images,
                "annotations": self.num_annotations, **self.extra()}

    def extra(self) -> dict[str, Any]:
        return {}


class PoseLabelled(Labelled):
    """A COCO person-keypoints file: one crop per annotated person, as the host checks."""

    task, format = "pose", "coco-keypoints"

    def __init__(self, artifact, images, labels):
        super().__init__(artifact, images, labels)
        self.decoder = PoseDecoder(artifact.meta)
        self.flip = bool(_meta.get(artifact.meta, "output.decoding.flip_test_in_checks", False))
        self.padding = _meta.number(artifact.meta, "output.person_crop.padding", CROP_PADDING, positive=True)
        pictures = folder_pictures(images)
        self.data, image_by_id = _coco_file(self.labels, "COCO person_keypoints file")
        _same_pictures(pictures, [im["file_name"] for im in image_by_id.values()], self.labels, self.images)
        self.paths = {iid: pictures[im["file_name"]] for iid, im in image_by_id.items()}
        self.skipped: Counter = Counter()
        self.instances = [inst for ann in self.data["annotations"]
                          if (inst := self._instance(ann, image_by_id)) is not None]
        if not self.instances:
            raise LabelsError(f"--labels {self.labels}: no person with a labelled keypoint inside its picture "
                              "to evaluate")
        _need_cocoeval("pose")
        self.num_images = len({i["image_id"] for i in self.instances})
        self.num_annotations = len(self.instances)

    def _instance(self, ann: Any, images: dict[int, dict]) -> dict | None:
        """The crop of an annotation, or None (counted in ``skipped``) for what the host
        leaves out: other categories, crowds, no labelled keypoint, every labelled
        keypoint outside the picture, an empty box."""
        k = self.decoder.num_keypoints
        _ann_key(ann, self.labels, ("id", "image_id", "keypoints", "bbox"))
        kps, box = ann["keypoints"], ann["bbox"]
        if not _numbers(kps, 3 * k) or any(v not in (0, 1, 2) for v in kps[2::3]):
            raise LabelsError(f"--labels {self.labels}: annotation {ann['id']} must have {3 * k} keypoint values "
                              f"[x, y, v, ...] with v in 0, 1, 2 (the artifact has {k} keypoints)")
        if not _numbers(box, 4):
            raise LabelsError(f"--labels {self.labels}: annotation {ann['id']} bbox must be 4 numbers [x, y, w, h]")
        if not _is_int(ann["image_id"]) or ann["image_id"] not in images:
            raise LabelsError(f"--labels {self.labels}: annotation {ann['id']} refers to image {ann['image_id']!r}, "
                              "which is not in 'images'")
        if ann.get("category_id", M.PERSON_CATEGORY_ID) != M.PERSON_CATEGORY_ID or ann.get("iscrowd", 0):
            self.skipped["not a person" if ann.get("category_id", 1) != 1 else "crowd region"] += 1
            return None
        kp = np.asarray(kps, np.float64).reshape(k, 3)
        labelled = kp[kp[:, 2] > 0]
        declared = ann.get("num_keypoints", len(labelled))
        if not len(labelled) or (isinstance(declared, (int, float)) and declared == 0):
            self.skipped["no labelled keypoint"] += 1
            return None
        image = images[ann["image_id"]]
        width, height = image.get("width"), image.get("height")
        known = isinstance(width, (int, float)) and isinstance(height, (int, float))
        if known and not ((labelled[:, 0] >= 0) & (labelled[:, 0] < width)
                          & (labelled[:, 1] >= 0) & (labelled[:, 1] < height)).any():
            self.skipped["every labelled keypoint outside its image"] += 1
            return None
        x, y, w, h = (float(v) for v in box)
        x1, y1 = max(0.0, x), max(0.0, y)  # the box clipped to the picture, as the host clips it
        x2, y2 = x + max(0.0, w - 1), y + max(0.0, h - 1)
        if known:
            x2, y2 = min(width - 1.0, x2), min(height - 1.0, y2)
        if w <= 0 or h <= 0 or x2 < x1 or y2 < y1:
            self.skipped["empty box or box outside its image"] += 1
            return None
        clipped = [x1, y1, x2 - x1 + 1, y2 - y1 + 1]
        return {"image_id": ann["image_id"], "joints": kp[:, :2], "vis": kp[:, 2], "bbox": clipped,
                **box_to_crop(clipped, self.input_size, self.padding)}

    def keypoints(self, run: RunFn) -> tuple[np.ndarray, np.ndarray]:
        """(N, K, 3) keypoints in picture pixels and (N,) person scores of every instance."""
        kps, scores, cached = [], [], (None, None)
        for inst in self.instances:
            if cached[0] != inst["image_id"]:
                cached = (inst["image_id"], read_image(self.paths[inst["image_id"]]))
            mat = get_affine_transform(inst["center"], inst["scale"], 0.0, self.input_size)
            crop = warp_affine(cached[1], mat, self.input_size)
            raw = self._feed(run, crop)
            flipped = self._feed(run, crop[:, ::-1]) if self.flip else None
            out = self.decoder.decode(raw, {"center": inst["center"], "scale": inst["scale"], "flipped": flipped})
            kps.append(out["keypoints"][0])
            scores.append(out["person_scores"][0])
        return np.stack(kps), np.asarray(scores, np.float64)

    def score(self, keypoints: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
        """The host's pose metric of decoded keypoints (one row per instance)."""
        ids = [i["image_id"] for i in self.instances]
        metric = M.oks_ap(_for_cocoeval(self.data), M.keypoint_results(keypoints, ids, scores), ids,
                          M.oks_sigmas(self.decoder.num_keypoints))
        joints = np.stack([i["joints"] for i in self.instances])
        vis = np.stack([i["vis"] for i in self.instances])
        sizes = np.asarray([max(i["bbox"][2], i["bbox"][3]) for i in self.instances])
        for alpha in M.PCK_ALPHAS:
            metric[f"PCK@{alpha}"] = M.pck(keypoints[..., :2], joints, vis, sizes, alpha)
        metric["num_instances"] = float(len(self.instances))
        return metric

    def _metric(self, run):
        return self.score(*self.keypoints(run))

    def extra(self):
        return {"flip_test": self.flip, "crop": "person box grown to the input aspect, padded by "
                f"{self.padding:g}, bilinear affine warp (numpy), zero outside the picture",
                "skipped": dict(self.skipped)}


class DetLabelled(Labelled):
    """A COCO instances file: every listed picture letterboxed, negatives included."""

    task, format = "det", "coco-instances"

    def __init__(self, artifact, images, labels):
        super().__init__(artifact, images, labels)
        self.decoder = DetDecoder(artifact.meta)
        self.pad = int(_meta.number(artifact.meta, "input.letterbox.pad_value", LETTERBOX_PAD))
        pictures = folder_pictures(images)
        self.data, image_by_id = _coco_file(self.labels, "COCO instances file")
        _same_pictures(pictures, [im["file_name"] for im in image_by_id.values()], self.labels, self.images)
        self.image_ids = list(image_by_id)
        self.entries = image_by_id
        self.paths = {iid: pictures[im["file_name"]] for iid, im in image_by_id.items()}
        cats = self.data["categories"]
        if not cats or not all(isinstance(c, dict) and _is_int(c.get("id")) for c in cats):
            raise LabelsError(f"--labels {self.labels}: 'categories' must list objects with an integer 'id'")
        label_ids = sorted(c["id"] for c in cats)
        if self.decoder.category_ids is not None:
            self.category_ids = self.decoder.category_ids
            unknown = sorted(set(self.category_ids.tolist()) - set(label_ids))
            if unknown:
                raise LabelsError(f"--labels {self.labels}: the artifact's output.category_ids {unknown} are not "
                                  f"among the file's categories {label_ids}: labels of another dataset")
        elif len(label_ids) != self.decoder.num_classes:
            raise LabelsError(f"--labels {self.labels}: {len(label_ids)} categories, but the artifact has "
                              f"{self.decoder.num_classes} classes and no output.category_ids to map them")
        else:
            self.category_ids = np.asarray(label_ids, np.int64)  # class k = the k-th id in order, as the host
        counted = 0
        for ann in self.data["annotations"]:
            _ann_key(ann, self.labels, ("id", "image_id", "category_id", "bbox"))
            if not (_is_int(ann["image_id"]) and ann["image_id"] in image_by_id and _is_int(ann["category_id"])
                    and ann["category_id"] in label_ids and _numbers(ann["bbox"], 4)):
                raise LabelsError(f"--labels {self.labels}: annotation {ann['id']} needs a listed image_id, a "
                                  "listed category_id and a bbox of 4 numbers [x, y, w, h]")
            counted += not ann.get("iscrowd", 0)
        _need_cocoeval("det")
        self.num_images, self.num_annotations = len(self.image_ids), counted

    def detections(self, run: RunFn) -> list[dict]:
        """The decoded detections of every picture (boxes in picture pixels)."""
        out = []
        for iid in self.image_ids:
            rgb = read_raw_rgb(self.paths[iid])
            im = self.entries[iid]
            want = (im.get("height", rgb.shape[0]), im.get("width", rgb.shape[1]))
            if rgb.shape[:2] != tuple(want):
                raise LabelsError(f"{self.paths[iid]} is {rgb.shape[1]}x{rgb.shape[0]} but --labels gives "
                                  f"{want[1]}x{want[0]} (WxH): its boxes would not fit it")
            frame, scale = letterbox(rgb, self.input_size, self.pad)
            out.append(self.decoder.decode(self._feed(run, frame), {"scale": scale, "orig_hw": rgb.shape[:2]}))
        return out

    def score(self, detections: Sequence[dict]) -> dict[str, Any]:
        """The host's box metric of decoded detections (one per picture, in ``image_ids`` order)."""
        results = []
        for iid, d in zip(self.image_ids, detections):
            results += M.box_results(d["boxes"], d["scores"], self.category_ids[np.asarray(d["classes"], np.int64)],
                                     iid)
        return M.bbox_ap(_for_cocoeval(self.data), results, self.image_ids)

    def _metric(self, run):
        return self.score(self.detections(run))

    def extra(self):
        return {"letterbox": f"scaled to fit, top-left, grey {self.pad}, bilinear (numpy)",
                "category_ids": self.category_ids.tolist()}


class SegLabelled(Labelled):
    """A folder of index masks, one ``<stem>.png`` per picture."""

    task, format = "seg", "mask-folder"

    def __init__(self, artifact, images, labels):
        super().__init__(artifact, images, labels)
        self.decoder = SegDecoder(artifact.meta)
        self.ignore_index = int(_meta.number(artifact.meta, "output.ignore_index", 255))
        self.flip = bool(_meta.get(artifact.meta, "output.decoding.flip_test_in_checks", False))
        if not self.labels.is_dir():
            raise LabelsError(f"--labels {self.labels}: no such folder; for segmentation --labels is a folder of "
                              "index PNG masks named like the pictures (<stem>.png)")
        pictures = folder_pictures(images)
        stems = Counter(p.stem for p in pictures.values())
        twice = sorted(s for s, n in stems.items() if n > 1)
        if twice:
            raise LabelsError(f"--images {self.images}: pictures share the stem(s) {_listing(twice)}, so they "
                              "would share one mask")
        self.pairs = [(p, self.labels / f"{p.stem}.png") for p in pictures.values()]
        missing = [m.name for _, m in self.pairs if not m.is_file()]
        if missing:
            raise LabelsError(f"--labels {self.labels}: {len(missing)} picture(s) of --images have no mask: "
                              f"{_listing(missing)}")
        self.num_images = self.num_annotations = len(self.pairs)

    def read_mask(self, path: Path) -> np.ndarray:
        """An index PNG (mode L or P, or grey saved as RGB) as H x W uint8 class ids."""
        from PIL import Image

        try:
            with Image.open(path) as im:
                arr = np.asarray(im)
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types on bad files
            raise LabelsError(f"mask {path} is unreadable ({type(exc).__name__}: {exc})") from None
        if arr.ndim == 3 and arr.shape[2] >= 3 and (arr[..., 0] == arr[..., 1]).all() \
                and (arr[..., 0] == arr[..., 2]).all():
            arr = arr[..., 0]
        if arr.ndim != 2 or (arr.size and (arr.min() < 0 or arr.max() > 255)):
            raise LabelsError(f"mask {path} is not a single-channel index PNG with class ids 0..255 "
                              f"(shape {arr.shape})")
        arr = arr.astype(np.uint8)
        bad = (arr >= self.decoder.num_classes) & (arr != self.ignore_index)
        if bad.any():
            raise LabelsError(f"mask {path} holds {_listing(np.unique(arr[bad]).tolist())}, outside the class ids "
                              f"0..{self.decoder.num_classes - 1} and the ignore value {self.ignore_index}")
        return arr

    def predictions(self, run: RunFn):
        """(predicted label map, label map) per picture, both at the model's input size."""
        for image, mask in self.pairs:
            rgb, lab = read_raw_rgb(image), self.read_mask(mask)
            if lab.shape != rgb.shape[:2]:
                raise LabelsError(f"mask {mask} is {lab.shape[1]}x{lab.shape[0]} but its picture {image.name} is "
                                  f"{rgb.shape[1]}x{rgb.shape[0]} (WxH)")
            pixels = resize_bilinear(rgb, self.input_size)
            raw = self._feed(run, pixels)
            flipped = self._feed(run, pixels[:, ::-1]) if self.flip else None
            pred = self.decoder.decode(raw, {"size": self.input_size, "flipped": flipped})["labels"][0]
            yield pred, resize_nearest(lab, self.input_size)

    def score(self, pairs) -> dict[str, Any]:
        k = self.decoder.num_classes
        conf = np.zeros((k, k), np.int64)
        n = 0
        for pred, lab in pairs:
            conf += M.confusion_matrix(pred, lab, k, self.ignore_index)
            n += 1
        metric = M.seg_metrics(conf, self.decoder.classes)
        metric["num_images"] = n
        return metric

    def _metric(self, run):
        return self.score(self.predictions(run))

    def extra(self):
        return {"flip_test": self.flip, "ignore_index": self.ignore_index,
                "resize": "picture bilinear, mask exact-centre nearest, both to the input size (numpy)"}


class ClsLabelled(Labelled):
    """A CSV (``file,label``) or JSON (``{"file": label}``) of class labels."""

    task = "cls"

    def __init__(self, artifact, images, labels):
        super().__init__(artifact, images, labels)
        self.classes = _meta.names(artifact.meta, "output.classes", _meta.count(artifact.meta, "output.num_classes"))
        ratio = _meta.get(artifact.meta, "task_info.resize_ratio", 0.875)
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
            raise LabelsError(f"metadata.json task_info.resize_ratio must be in (0, 1], got {ratio!r}")
        self.resize_ratio = float(ratio)
        pictures = folder_pictures(images)
        rows = self._rows()
        _same_pictures(pictures, [name for name, _ in rows], self.labels, self.images)
        self.files = [pictures[name] for name, _ in rows]
        self.targets = np.asarray([self._index(name, label) for name, label in rows], np.int64)
        self.num_images = self.num_annotations = len(rows)

    def _rows(self) -> list[tuple[str, Any]]:
        if not self.labels.is_file():
            raise LabelsError(f"--labels {self.labels}: no such file (a CSV 'file,label' or a JSON "
                              "{\"file\": label} object)")
        if self.labels.suffix.lower() == ".json":
            self.format = "json"
            data = _read_json(self.labels, 'JSON object {"file name": label}')
            if not isinstance(data, dict) or not data:
                raise LabelsError(f"--labels {self.labels}: expected a non-empty JSON object "
                                  '{"file name": class name or index}')
            rows = list(data.items())
        else:
            self.format = "csv"
            try:
                text = self.labels.read_text(encoding="utf-8-sig")
            except (OSError, UnicodeDecodeError) as exc:
                raise LabelsError(f"--labels {self.labels}: not a readable text file ({exc})") from None
            lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
            rows = []
            for n, row in enumerate(csv.reader(lines), 1):
                row = [c.strip() for c in row]
                if n == 1 and [c.lower() for c in row] == ["file", "label"]:
                    continue  # the optional header
                if len(row) != 2 or not row[0] or not row[1]:
                    raise LabelsError(f"--labels {self.labels}: line {row!r} is not 'file,label' (two fields)")
                rows.append((row[0], row[1]))
        names = [name for name, _ in rows]
        twice = sorted(n for n, c in Counter(names).items() if c > 1)
        if twice:
            raise LabelsError(f"--labels {self.labels}: picture(s) labelled twice: {_listing(twice)}")
        if not rows:
            raise LabelsError(f"--labels {self.labels}: no label in it")
        bad = [n for n in names if not isinstance(n, str) or Path(n).name != n]
        if bad:
            raise LabelsError(f"--labels {self.labels}: {_listing(bad)} must be names of pictures directly in "
                              "--images (no folders)")
        return rows

    def _index(self, name: str, label: Any) -> int:
        if isinstance(label, str) and label in self.classes:
            return self.classes.index(label)
        if _is_int(label) or (isinstance(label, str) and label.isdigit()):
            if 0 <= int(label) < len(self.classes):
                return int(label)
        raise LabelsError(f"--labels {self.labels}: {name} is labelled {label!r}, which is neither one of the "
                          f"artifact's classes ({_listing(self.classes)}) nor an index 0..{len(self.classes) - 1}")

    def logits(self, run: RunFn) -> np.ndarray:
        """(N, K) raw outputs, one row per labelled picture."""
        rows = []
        for path in self.files:
            view = center_crop_view(read_raw_rgb(path), self.input_size, self.resize_ratio)
            rows.append(np.asarray(self._feed(run, view), np.float64).reshape(-1))
        return np.stack(rows)

    def score(self, logits: np.ndarray) -> dict[str, Any]:
        metric = M.topk_accuracy(logits, self.targets, (1, 5))
        metric["num_images"] = float(len(self.targets))
        return metric

    def _metric(self, run):
        return self.score(self.logits(run))

    def extra(self):
        return {"view": f"short side to input / {self.resize_ratio:g}, centre crop (numpy area/bilinear)"}


LABELLED = {"pose": PoseLabelled, "det": DetLabelled, "seg": SegLabelled, "cls": ClsLabelled}


def load_labels(artifact: Artifact, images: str | Path | None, labels: str | Path) -> Labelled:
    """Check ``labels`` against the pictures of ``images`` for the artifact's task.

    Raises:
        LabelsError: no ``images``, a task without a metric here, a missing or malformed
            labels file or folder, pictures and labels that do not match.
        RuntimeUnavailable: pose/det without pycocotools (the ``metrics`` extra).
        MetadataError: a metadata key the task's decoder needs is missing.
    """
    if images is None:
        raise LabelsError("--labels needs --images DIR: the labelled pictures")
    if artifact.task not in LABELLED:
        raise LabelsError(f"task {artifact.task!r} has no metric on labelled pictures; --labels works for "
                          f"{', '.join(LABELLED)}")
    return LABELLED[artifact.task](artifact, Path(images), Path(labels))
