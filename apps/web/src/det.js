// Detection: the letterboxed input and the decoder of the raw point output (point grid,
// boxes, scores, per-level top-k, NMS, back through the letterbox), as metadata.json
// describes them (output.decoding: its config and input_size, output.strides,
// output.level_sizes, output.classes). Pure functions on typed arrays, no DOM.
//
// Conventions (those of the Python runtime, hrnet_edge_runtime.decode.det):
// * input: the picture scaled by s = min(H / h, W / w) (bilinear, no anti-aliasing),
//   at the top-left of an H x W frame of grey 114, no offset (resize.js letterbox);
// * raw (P, 5 + C): per point [l, t, r, b, centerness logit, class logits...], level
//   by level (strides 4, 8, 16, ...), row-major inside a level;
// * box = (cx - e^l s, cy - e^t s, cx + e^r s, cy + e^b s), cx = (col + 0.5) s, the
//   exponent clamped at 12; score = sigmoid(class) * sigmoid(centerness);
// * candidates: per level score > threshold, the pre_nms_topk best (ties: lower p*C+c);
//   boxes clipped to the input and rounded to float32, those under min_box_size
//   dropped; greedy NMS (IoU > threshold suppressed) per class or across classes;
//   the first max_detections; original = input / s, clipped to the picture, and a box
//   left with no width or height there (wholly in the padding) dropped.
import { MetadataError, inputSpec, metaGet as get, positiveInt } from "./pose.js";
import { letterbox } from "./resize.js";

export const BASE_STRIDE = 4;
export const MAX_LOG_DISTANCE = 12.0;
const f32 = Math.fround;

// DecodeConfig's fields and defaults (hrnet_edge_runtime.decode.det.DecodeConfig).
export const DECODE_DEFAULTS = {
  score_threshold: 0.05, pre_nms_topk: 1000, iou_threshold: 0.6, max_detections: 100, class_aware: true, min_box_size: 1.0,
};

function finite(v, path) {
  if (typeof v !== "number" || !Number.isFinite(v)) throw new MetadataError(path, `must be a finite number, got ${JSON.stringify(v)}`);
  return v;
}

/** The decode settings of output.decoding: its `config` object, or the short form's score_threshold and nms_iou. */
export function decodeConfig(meta) {
  const decoding = get(meta, "output.decoding");
  let fields;
  let key;
  if (decoding && typeof decoding === "object" && "config" in decoding) {
    key = "output.decoding.config";
    fields = decoding.config;
    if (!fields || typeof fields !== "object" || Array.isArray(fields)) throw new MetadataError(key, `must be an object, got ${JSON.stringify(fields)}`);
    const unknown = Object.keys(fields).filter((k) => !(k in DECODE_DEFAULTS)).sort();
    if (unknown.length) throw new MetadataError(key, `holds unknown field(s) ${JSON.stringify(unknown)}; valid: ${Object.keys(DECODE_DEFAULTS).join(", ")}`);
  } else {
    key = "output.decoding";
    fields = { score_threshold: get(meta, "output.decoding.score_threshold"), iou_threshold: get(meta, "output.decoding.nms_iou") };
  }
  const cfg = { ...DECODE_DEFAULTS, ...fields };
  for (const name of ["score_threshold", "iou_threshold", "min_box_size"]) finite(cfg[name], `${key}.${name}`);
  if (!(cfg.score_threshold >= 0 && cfg.score_threshold < 1)) throw new MetadataError(`${key}.score_threshold`, `must be in [0, 1), got ${cfg.score_threshold}`);
  if (!(cfg.iou_threshold > 0 && cfg.iou_threshold <= 1)) throw new MetadataError(`${key}.iou_threshold`, `must be in (0, 1], got ${cfg.iou_threshold}`);
  if (cfg.min_box_size < 0) throw new MetadataError(`${key}.min_box_size`, `must be >= 0 (input pixels), got ${cfg.min_box_size}`);
  for (const name of ["pre_nms_topk", "max_detections"]) positiveInt(cfg[name], `${key}.${name}`);
  if (typeof cfg.class_aware !== "boolean") throw new MetadataError(`${key}.class_aware`, `must be true or false, got ${JSON.stringify(cfg.class_aware)}`);
  return cfg;
}

/** Point grid (rows, cols) of each level: level 0 is (H // 4, W // 4), level i floors it by 2**i. */
export function levelShapes(inputHW, levels) {
  const h0 = Math.floor(inputHW[0] / BASE_STRIDE);
  const w0 = Math.floor(inputHW[1] / BASE_STRIDE);
  return Array.from({ length: levels }, (_, i) => [Math.floor(h0 / 2 ** i), Math.floor(w0 / 2 ** i)]);
}

/** What the detection decoder needs from metadata.json, checked. */
export function detSpec(meta) {
  if (get(meta, "task") !== "det") throw new MetadataError("task", `is ${JSON.stringify(meta.task)}; this is the detection decoder`);
  const config = decodeConfig(meta);
  const input = inputSpec(meta);
  const size = get(meta, "output.decoding.input_size", null);
  if (size !== null && !(Array.isArray(size) && size.length === 2 && size.every((v) => Number.isInteger(v) && v > 0))) {
    throw new MetadataError("output.decoding.input_size", `must be the input's [H, W], got ${JSON.stringify(size)}`);
  }
  const inputSize = size || [input.height, input.width];
  if (inputSize[0] !== input.height || inputSize[1] !== input.width) {
    throw new MetadataError("output.decoding.input_size", `${JSON.stringify(inputSize)} differs from the input shape ${input.height}x${input.width}`);
  }
  const strides = get(meta, "output.strides");
  if (!Array.isArray(strides) || !strides.length) throw new MetadataError("output.strides", `must be a non-empty list, got ${JSON.stringify(strides)}`);
  const want = strides.map((_, i) => BASE_STRIDE * 2 ** i);
  if (strides.some((s, i) => s !== want[i])) throw new MetadataError("output.strides", `must be ${JSON.stringify(want)} (4 * 2**level), got ${JSON.stringify(strides)}`);
  const shapes = levelShapes(inputSize, strides.length);
  if (shapes.some(([h, w]) => h < 1 || w < 1)) {
    throw new MetadataError("output.decoding.input_size", `${JSON.stringify(inputSize)} is too small for ${strides.length} levels: H and W must be >= ${want[want.length - 1]}`);
  }
  const sizes = get(meta, "output.level_sizes", null);
  if (sizes !== null && JSON.stringify(sizes) !== JSON.stringify(shapes)) {
    throw new MetadataError("output.level_sizes", `${JSON.stringify(sizes)} does not fit input ${JSON.stringify(inputSize)}: expected ${JSON.stringify(shapes)}`);
  }
  const numClasses = positiveInt(get(meta, "output.num_classes"), "output.num_classes");
  const classes = get(meta, "output.classes");
  if (!Array.isArray(classes) || classes.length !== numClasses || !classes.every((s) => typeof s === "string")) {
    throw new MetadataError("output.classes", `must list ${numClasses} names (one per class), got ${Array.isArray(classes) ? `${classes.length} entries` : JSON.stringify(classes)}`);
  }
  const ids = get(meta, "output.category_ids", null);
  if (ids !== null && !(Array.isArray(ids) && ids.length === numClasses && ids.every(Number.isInteger))) {
    throw new MetadataError("output.category_ids", `must list ${numClasses} integer ids (one per class), got ${JSON.stringify(ids)}`);
  }
  const letterboxText = get(meta, "output.decoding.letterbox", null);
  if (letterboxText !== null && !(typeof letterboxText === "string" && letterboxText.includes("top-left"))) {
    throw new MetadataError("output.decoding.letterbox", `${JSON.stringify(letterboxText)} is not the top-left letterbox this page makes`);
  }
  return {
    task: "det",
    input,
    config,
    inputSize,
    strides,
    shapes,
    numPoints: shapes.reduce((n, [h, w]) => n + h * w, 0),
    numClasses,
    classes: classes.slice(),
    categoryIds: ids,
  };
}

/** The model input's RGB bytes and the letterbox scale: {rgb, scale, resized}. */
export function detInputRGB(pix, w, h, spec, channels = 4) {
  return letterbox(pix, w, h, spec.inputSize[0], spec.inputSize[1], channels);
}

/** sigmoid(x) = 1 / (1 + exp(-x)), computed stably. */
export function sigmoid(x) {
  const e = Math.exp(-Math.abs(x));
  return x >= 0 ? 1 / (1 + e) : e / (1 + e);
}

function iou(b, i, j) {
  const a0 = b[i * 4]; const a1 = b[i * 4 + 1]; const a2 = b[i * 4 + 2]; const a3 = b[i * 4 + 3];
  const c0 = b[j * 4]; const c1 = b[j * 4 + 1]; const c2 = b[j * 4 + 2]; const c3 = b[j * 4 + 3];
  const areaA = Math.max(a2 - a0, 0) * Math.max(a3 - a1, 0);
  const areaB = Math.max(c2 - c0, 0) * Math.max(c3 - c1, 0);
  const iw = Math.max(Math.min(a2, c2) - Math.max(a0, c0), 0);
  const ih = Math.max(Math.min(a3, c3) - Math.max(a1, c1), 0);
  const inter = iw * ih;
  const union = areaA + areaB - inter;
  return union > 0 ? inter / union : 0;
}

/** Stable descending order of `idx` by score. */
function byScore(idx, scores) {
  return idx.map((k, n) => [k, n]).sort((p, q) => scores[q[0]] - scores[p[0]] || p[1] - q[1]).map((p) => p[0]);
}

/** Greedy NMS over the candidates `idx` (in index order): kept indices, descending score. */
export function nms(boxes, scores, idx, threshold) {
  let order = byScore(idx, scores);
  const keep = [];
  while (order.length) {
    const i = order[0];
    keep.push(i);
    order = order.slice(1).filter((j) => iou(boxes, i, j) <= threshold);
  }
  return keep;
}

/**
 * Detections of one image from its raw output (P, 5 + C) or (1, P, 5 + C). With a
 * letterbox {scale, origHW: [H, W]} the boxes are mapped back to the picture.
 * Returns {boxes: [[x1, y1, x2, y2]], scores, classes, labels, categoryIds, coordinates}.
 */
export function decodeDet(data, dims, spec, lb = null) {
  const d = dims.length === 3 && dims[0] === 1 ? dims.slice(1) : dims;
  const cols = 5 + spec.numClasses;
  if (d.length !== 2 || d[0] !== spec.numPoints || d[1] !== cols) {
    throw new RangeError(`raw must be one image's (P, 5 + C) = (${spec.numPoints}, ${cols}) output, got dims ${JSON.stringify(dims)}`);
  }
  if (data.length !== spec.numPoints * cols) throw new RangeError(`dims ${JSON.stringify(dims)} need ${spec.numPoints * cols} values, got ${data.length}`);
  for (let i = 0; i < data.length; i++) if (Number.isNaN(data[i])) throw new RangeError("the raw detection output holds NaN values");
  const { config: cfg, numClasses: C } = spec;
  const [H, W] = spec.inputSize;
  // Candidates per level: score > threshold, the pre_nms_topk best, then all in flat order.
  const scores = new Float64Array(spec.numPoints * C);
  const picked = [];
  let first = 0;
  for (const [h, w] of spec.shapes) {
    const idx = [];
    for (let p = first; p < first + h * w; p++) {
      const ctr = sigmoid(data[p * cols + 4]);
      for (let c = 0; c < C; c++) {
        const s = sigmoid(data[p * cols + 5 + c]) * ctr;
        scores[p * C + c] = s;
        if (s > cfg.score_threshold) idx.push(p * C + c);
      }
    }
    picked.push(...byScore(idx, scores).slice(0, cfg.pre_nms_topk));
    first += h * w;
  }
  picked.sort((a, b) => a - b);
  // Point of each flat index: its level, row and column.
  const levelOf = [];
  first = 0;
  spec.shapes.forEach(([h, w], i) => {
    levelOf.push({ first, last: first + h * w, stride: spec.strides[i], w });
    first += h * w;
  });
  const boxes = [];
  const candScores = [];
  const candClasses = [];
  const clip = (v, hi) => (v < 0 ? 0 : v > hi ? hi : v);
  for (const flat of picked) {
    const p = Math.floor(flat / C);
    const c = flat % C;
    const lv = levelOf.find((l) => p >= l.first && p < l.last);
    const q = p - lv.first;
    const s = lv.stride;
    const cx = f32((q % lv.w + 0.5) * s);
    const cy = f32((Math.floor(q / lv.w) + 0.5) * s);
    const dist = [0, 1, 2, 3].map((k) => Math.exp(Math.min(data[p * cols + k], MAX_LOG_DISTANCE)) * s);
    const b = [f32(clip(cx - dist[0], W)), f32(clip(cy - dist[1], H)), f32(clip(cx + dist[2], W)), f32(clip(cy + dist[3], H))];
    const minSize = f32(cfg.min_box_size);
    if (f32(b[2] - b[0]) >= minSize && f32(b[3] - b[1]) >= minSize) {
      boxes.push(...b);
      candScores.push(scores[flat]);
      candClasses.push(c);
    }
  }
  const all = candScores.map((_, i) => i);
  let keep;
  if (cfg.class_aware) {
    keep = [];
    for (const c of [...new Set(candClasses)].sort((a, b) => a - b)) {
      keep.push(...nms(boxes, candScores, all.filter((i) => candClasses[i] === c), cfg.iou_threshold));
    }
    keep.sort((a, b) => a - b);
    keep = byScore(keep, candScores);
  } else {
    keep = nms(boxes, candScores, all, cfg.iou_threshold);
  }
  keep = keep.slice(0, cfg.max_detections);
  let out = keep.map((i) => boxes.slice(i * 4, i * 4 + 4));
  let coordinates = "input";
  if (lb) {
    const { scale, origHW } = lb;
    if (!(Number.isFinite(scale) && scale > 0)) throw new RangeError(`letterbox scale must be a positive finite number, got ${scale}`);
    const [oh, ow] = origHW;
    out = out.map(([x1, y1, x2, y2]) => [f32(clip(x1 / scale, ow)), f32(clip(y1 / scale, oh)), f32(clip(x2 / scale, ow)), f32(clip(y2 / scale, oh))]);
    // a box wholly in the padding clips to zero width or height: it covers nothing, drop it
    const inside = out.map(([x1, y1, x2, y2]) => x2 > x1 && y2 > y1);
    out = out.filter((_, k) => inside[k]);
    keep = keep.filter((_, k) => inside[k]);
    coordinates = "image";
  }
  const classes = keep.map((i) => candClasses[i]);
  return {
    boxes: out,
    scores: keep.map((i) => f32(candScores[i])),
    classes,
    labels: classes.map((c) => spec.classes[c]),
    categoryIds: spec.categoryIds ? classes.map((c) => spec.categoryIds[c]) : null,
    coordinates,
  };
}

/** The letterbox of an (H, W) picture into the input: {scale, origHW}. */
export function letterboxContext(origHW, spec) {
  return { scale: Math.min(spec.inputSize[0] / origHW[0], spec.inputSize[1] / origHW[1]), origHW: [origHW[0], origHW[1]] };
}
