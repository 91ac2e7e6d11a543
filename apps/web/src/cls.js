// Classification: the centre-crop view and the top-k decoder, as metadata.json
// describes them (output.preprocess, output.classes). Pure functions, no DOM.
//
// Conventions (those of the Python runtime, hrnet_edge_runtime.decode.cls and
// transforms.center_crop_view):
// * input: the picture scaled to just cover input / resize_ratio (short side to
//   round(H / resize_ratio) for a square input; area averaging when an axis shrinks,
//   else bilinear), then the centre input-sized block;
// * top-k: ranked by logit, equal logits the lower class index first, a NaN logit
//   below every number; probabilities = softmax(logits) computed with the max subtracted.
import { MetadataError, inputSpec, metaGet as get, positiveInt } from "./pose.js";
import { centreCropView } from "./resize.js";

export const DEFAULT_TOPK = 5;
// "resize the short side to input / 0.875, centre-crop to the input size, RGB in 0..1"
const PREPROCESS = /resize the short side to input \/ ([0-9]*\.?[0-9]+(?:e-?[0-9]+)?).*centre-crop/;

/** The crop fraction: task_info.resize_ratio, else the number in output.preprocess. */
export function resizeRatio(meta) {
  const given = get(meta, "task_info.resize_ratio", null);
  let ratio;
  let key;
  if (given !== null) {
    ratio = given;
    key = "task_info.resize_ratio";
  } else {
    const text = get(meta, "output.preprocess");
    const m = typeof text === "string" ? PREPROCESS.exec(text) : null;
    if (!m) {
      throw new MetadataError("output.preprocess", `${JSON.stringify(text)} is not "resize the short side to input / R, centre-crop ...": this page knows only that preprocessing`);
    }
    ratio = Number(m[1]);
    key = "output.preprocess";
  }
  if (typeof ratio !== "number" || !(ratio > 0 && ratio <= 1)) throw new MetadataError(key, `resize ratio must be in (0, 1], got ${JSON.stringify(ratio)}`);
  return ratio;
}

/** What the classification decoder needs from metadata.json, checked. */
export function clsSpec(meta) {
  if (get(meta, "task") !== "cls") throw new MetadataError("task", `is ${JSON.stringify(meta.task)}; this is the classification decoder`);
  const numClasses = positiveInt(get(meta, "output.num_classes"), "output.num_classes");
  const classes = get(meta, "output.classes");
  if (!Array.isArray(classes) || classes.length !== numClasses || !classes.every((s) => typeof s === "string")) {
    throw new MetadataError("output.classes", `must list ${numClasses} names (one per class), got ${Array.isArray(classes) ? `${classes.length} entries` : JSON.stringify(classes)}`);
  }
  return { task: "cls", input: inputSpec(meta), numClasses, classes: classes.slice(), resizeRatio: resizeRatio(meta) };
}

/** The model input's RGB bytes: {rgb, resized: [rows, cols], top, left}. */
export function clsInputRGB(pix, w, h, spec, channels = 4) {
  return centreCropView(pix, w, h, spec.input.height, spec.input.width, spec.resizeRatio, channels);
}

/** Softmax of one row of logits (NaN counts as -Infinity: probability 0), float64. */
export function softmax(logits) {
  const x = Array.from(logits, (v) => (Number.isNaN(v) ? -Infinity : v));
  const m = Math.max(...x);
  const e = x.map((v) => Math.exp(v - (Number.isFinite(m) ? m : 0)));
  const total = e.reduce((a, b) => a + b, 0);
  return total > 0 && Number.isFinite(total) ? e.map((v) => v / total) : e.map(() => 0);
}

/**
 * Top-k of one image's logits, (K) or (1, K): [{index, label, probability, logit}],
 * best first (ties: lower index).
 */
export function decodeCls(data, dims, spec, k = DEFAULT_TOPK) {
  const K = dims[dims.length - 1];
  if (!(dims.length === 1 || (dims.length === 2 && dims[0] === 1)) || K !== spec.numClasses || data.length !== K) {
    throw new RangeError(`raw must be one image's logits (1, K) with K = ${spec.numClasses}, got dims ${JSON.stringify(dims)}`);
  }
  if (!Number.isInteger(k) || k < 1) throw new RangeError(`top-k needs a positive integer k, got ${k}`);
  const x = Array.from(data, (v) => (Number.isNaN(v) ? -Infinity : v));
  const prob = softmax(x);
  const order = x.map((_, i) => i).sort((a, b) => (x[b] > x[a] ? 1 : x[b] < x[a] ? -1 : a - b));
  return order.slice(0, k).map((i) => ({ index: i, label: spec.classes[i], probability: prob[i], logit: data[i] }));
}
