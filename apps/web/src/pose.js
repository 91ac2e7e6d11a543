// Pose: the person crop, the model input and the heatmap decoder, as metadata.json
// describes them (output.decoding, input.*). Pure functions on typed arrays, no DOM:
// the page and the Node decoder check (test/decode.mjs) use the same code.
//
// Conventions (those of the Python runtime, hrnet_edge_runtime.decode.pose):
// * pixel-index coordinates: the centre of pixel (row i, column j) is (x=j, y=i);
// * the crop maps a box (centre c, size s) to the W x H input, centre to centre:
//   input = k * (p - c) + ((W-1)/2, (H-1)/2), k = W / s_w (no rotation at test time);
// * heatmap pixel -> input pixel: x_in = (x_hm + 0.5) * (W / w) - 0.5.

export class MetadataError extends Error {
  constructor(path, message) {
    super(`metadata.json ${path} ${message}`);
    this.name = "MetadataError";
  }
}

export const DECODERS = ["dark", "quarter"];
// A person box grows by this factor around its centre before cropping (HRNet's 1.25),
// when the metadata does not say otherwise (output.person_crop.padding).
export const DEFAULT_CROP_PADDING = 1.25;

function get(meta, path, fallback) {
  let node = meta;
  for (const part of path.split(".")) {
    if (node === null || typeof node !== "object" || !(part in node)) {
      if (fallback !== undefined) return fallback;
      throw new MetadataError(path, "is missing");
    }
    node = node[part];
  }
  return node;
}

function positiveInt(v, path) {
  if (!Number.isInteger(v) || v < 1) throw new MetadataError(path, `must be a positive integer, got ${JSON.stringify(v)}`);
  return v;
}

// The checked metadata readers, shared with seg.js, det.js and cls.js.
export { get as metaGet, positiveInt };

/** The input contract of an artifact: {height, width, layout, dtype, normalizeInGraph, mean, std}. */
export function inputSpec(meta) {
  const layout = get(meta, "input.layout");
  const shape = get(meta, "input.shape");
  const axes = { NCHW: [2, 3], NHWC: [1, 2] }[layout];
  if (!axes) throw new MetadataError("input.layout", `${JSON.stringify(layout)} is not known; valid: NCHW, NHWC`);
  if (!Array.isArray(shape) || shape.length !== 4) throw new MetadataError("input.shape", "must have 4 dimensions");
  const dtype = get(meta, "input.dtype");
  if (dtype !== "float32" && dtype !== "uint8") {
    throw new MetadataError("input.dtype", `${JSON.stringify(dtype)} is not supported here; valid: float32, uint8`);
  }
  const norm = get(meta, "input.normalization", {});
  return {
    name: get(meta, "input.name", "input"),
    height: positiveInt(shape[axes[0]], "input.shape"),
    width: positiveInt(shape[axes[1]], "input.shape"),
    layout,
    dtype,
    normalizeInGraph: norm.in_graph !== false,
    mean: norm.mean || [0, 0, 0],
    std: norm.std || [1, 1, 1],
  };
}

/** What the pose decoder needs from metadata.json, checked. */
export function poseSpec(meta) {
  if (get(meta, "task") !== "pose") throw new MetadataError("task", `is ${JSON.stringify(meta.task)}; this is the pose decoder`);
  const decoder = get(meta, "output.decoding.decoder");
  if (!DECODERS.includes(decoder)) {
    throw new MetadataError("output.decoding.decoder", `${JSON.stringify(decoder)} is not known; valid: ${DECODERS.join(", ")}`);
  }
  const k = positiveInt(get(meta, "output.num_keypoints"), "output.num_keypoints");
  const layout = get(meta, "output.layout");
  if (layout !== "NCHW" && layout !== "NHWC") {
    throw new MetadataError("output.layout", `${JSON.stringify(layout)} is not known; valid: NCHW, NHWC`);
  }
  const perm = Array.from({ length: k }, (_, i) => i);
  for (const pair of get(meta, "output.flip_pairs", [])) {
    if (!Array.isArray(pair) || pair.length !== 2 || !pair.every((j) => Number.isInteger(j) && j >= 0 && j < k)) {
      throw new MetadataError("output.flip_pairs", `entry ${JSON.stringify(pair)} must be two joint indices in 0..${k - 1}`);
    }
    perm[pair[0]] = pair[1];
    perm[pair[1]] = pair[0];
  }
  return {
    input: inputSpec(meta),
    numKeypoints: k,
    layout,
    decoder,
    sigma: Number(get(meta, "output.decoding.target_sigma", 2.0)),
    scoreThreshold: Number(get(meta, "output.decoding.score_threshold", 0.2)),
    flipTest: Boolean(get(meta, "output.decoding.flip_test_in_checks", false)),
    flipPerm: perm,
    names: get(meta, "output.keypoint_names", get(meta, "task_info.keypoint_names", [])),
    skeleton: get(meta, "output.skeleton", get(meta, "task_info.skeleton", [])),
    padding: Number(get(meta, "output.person_crop.padding", DEFAULT_CROP_PADDING)),
  };
}

/** Python's round(): halves to even (radius of the DARK kernel). */
function roundHalfEven(v) {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * The crop of a person box {x, y, w, h}: grown on its short side to the input's aspect
 * ratio, then by `padding`, around its centre. Returns {center: [cx, cy], scale: [w, h]}.
 */
export function boxToCrop(box, inputHW, padding = DEFAULT_CROP_PADDING) {
  const { x, y, w, h } = box;
  if (![x, y, w, h].every(Number.isFinite) || w <= 0 || h <= 0) {
    throw new RangeError(`a person box must be four finite numbers x, y, w, h with w, h > 0, got ${JSON.stringify(box)}`);
  }
  const aspect = inputHW[1] / inputHW[0];
  let bw = w;
  let bh = h;
  if (bw > aspect * bh) bh = bw / aspect;
  else bw = bh * aspect;
  return { center: [x + w * 0.5, y + h * 0.5], scale: [bw * padding, bh * padding] };
}

/** 2x3 matrix (row-major [a, b, tx, c, d, ty]) from image to crop coordinates, or back. */
export function cropAffine(crop, inputHW, inverse = false) {
  const [outH, outW] = inputHW;
  const k = outW / crop.scale[0];
  const tx = (outW - 1) / 2 - k * crop.center[0];
  const ty = (outH - 1) / 2 - k * crop.center[1];
  const m = [k, 0, tx, 0, k, ty];
  return inverse ? invertAffine(m) : m;
}

export function invertAffine(m) {
  const [a, b, tx, c, d, ty] = m;
  const det = a * d - b * c;
  if (!det) throw new RangeError("the crop matrix is singular");
  const ia = d / det;
  const ib = -b / det;
  const ic = -c / det;
  const id = a / det;
  return [ia, ib, -(ia * tx + ib * ty), ic, id, -(ic * tx + id * ty)];
}

export function applyAffine(m, x, y) {
  return [m[0] * x + m[1] * y + m[2], m[3] * x + m[4] * y + m[5]];
}

/**
 * Crop an RGBA image (as from a canvas' getImageData) with the image->crop matrix `m`
 * to outW x outH RGB bytes: bilinear, zero outside the image, rounded to the nearest
 * byte. OpenCV's warpAffine (the project's checks) gives the same bytes to one grey level.
 */
export function warpAffineRGB(rgba, srcW, srcH, m, outW, outH) {
  const inv = invertAffine(m);
  const out = new Uint8Array(outW * outH * 3);
  const px = (xi, yi, ch) => (xi < 0 || yi < 0 || xi >= srcW || yi >= srcH ? 0 : rgba[(yi * srcW + xi) * 4 + ch]);
  for (let y = 0; y < outH; y++) {
    for (let x = 0; x < outW; x++) {
      const sx = inv[0] * x + inv[1] * y + inv[2];
      const sy = inv[3] * x + inv[4] * y + inv[5];
      const x0 = Math.floor(sx);
      const y0 = Math.floor(sy);
      const fx = sx - x0;
      const fy = sy - y0;
      for (let ch = 0; ch < 3; ch++) {
        const v = (1 - fy) * ((1 - fx) * px(x0, y0, ch) + fx * px(x0 + 1, y0, ch))
          + fy * ((1 - fx) * px(x0, y0 + 1, ch) + fx * px(x0 + 1, y0 + 1, ch));
        out[(y * outW + x) * 3 + ch] = Math.min(255, Math.max(0, Math.round(v)));
      }
    }
  }
  return out;
}

/** Mirror H x W x 3 RGB bytes left-right (the flip test's second input). */
export function mirrorRGB(rgb, w, h) {
  const out = new Uint8Array(rgb.length);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const s = (y * w + x) * 3;
      const d = (y * w + (w - 1 - x)) * 3;
      out[d] = rgb[s];
      out[d + 1] = rgb[s + 1];
      out[d + 2] = rgb[s + 2];
    }
  }
  return out;
}

/** H x W x 3 RGB bytes as the input tensor's data (Float32Array or Uint8Array) and dims. */
export function rgbToInput(rgb, spec) {
  const { height: h, width: w } = spec;
  const dims = spec.layout === "NCHW" ? [1, 3, h, w] : [1, h, w, 3];
  if (spec.dtype === "uint8") {
    if (spec.layout === "NHWC") return { data: Uint8Array.from(rgb), dims, type: "uint8" };
    const u = new Uint8Array(3 * h * w);
    for (let i = 0; i < h * w; i++) for (let c = 0; c < 3; c++) u[c * h * w + i] = rgb[i * 3 + c];
    return { data: u, dims, type: "uint8" };
  }
  const f = new Float32Array(3 * h * w);
  for (let i = 0; i < h * w; i++) {
    for (let c = 0; c < 3; c++) {
      let v = Math.fround(rgb[i * 3 + c] / 255);
      if (!spec.normalizeInGraph) v = (v - spec.mean[c]) / spec.std[c];
      f[spec.layout === "NCHW" ? c * h * w + i : i * 3 + c] = v;
    }
  }
  return { data: f, dims, type: "float32" };
}

/** An output (1, K, h, w) or (1, h, w, K) as K planes of h x w (Float64Array each). */
export function heatmapPlanes(data, dims, spec) {
  if (dims.length !== 4 || dims[0] !== 1) throw new RangeError(`expected one crop's heatmaps, got dims ${JSON.stringify(dims)}`);
  const [k, h, w] = spec.layout === "NCHW" ? [dims[1], dims[2], dims[3]] : [dims[3], dims[1], dims[2]];
  if (k !== spec.numKeypoints) throw new RangeError(`the model gives ${k} heatmaps, metadata says ${spec.numKeypoints}`);
  const planes = [];
  for (let j = 0; j < k; j++) {
    const p = new Float64Array(h * w);
    for (let i = 0; i < h * w; i++) p[i] = spec.layout === "NCHW" ? data[j * h * w + i] : data[i * k + j];
    planes.push(p);
  }
  return { planes, h, w };
}

/** Flip test: mean of the heatmaps and those of the mirrored crop, mirrored back with sides swapped. */
export function flipAverage(hm, flipped, perm) {
  const { h, w } = hm;
  const planes = hm.planes.map((p, j) => {
    const q = flipped.planes[perm[j]];
    const out = new Float64Array(h * w);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) out[y * w + x] = 0.5 * (p[y * w + x] + q[y * w + (w - 1 - x)]);
    }
    return out;
  });
  return { planes, h, w };
}

function argmax(p) {
  let best = 0;
  for (let i = 1; i < p.length; i++) if (p[i] > p[best]) best = i;
  return best;
}

function gaussianBlur(p, h, w, sigma) {
  const radius = Math.max(1, roundHalfEven(3 * sigma));
  const taps = [];
  let sum = 0;
  for (let i = -radius; i <= radius; i++) {
    const t = Math.exp(-(i * i) / (2 * sigma * sigma));
    taps.push(t);
    sum += t;
  }
  for (let i = 0; i < taps.length; i++) taps[i] /= sum;
  const clamp = (v, hi) => (v < 0 ? 0 : v > hi ? hi : v);
  const tmp = new Float64Array(h * w);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      let s = 0;
      for (let i = 0; i < taps.length; i++) s += taps[i] * p[clamp(y + i - radius, h - 1) * w + x];
      tmp[y * w + x] = s;
    }
  }
  const out = new Float64Array(h * w);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      let s = 0;
      for (let i = 0; i < taps.length; i++) s += taps[i] * tmp[y * w + clamp(x + i - radius, w - 1)];
      out[y * w + x] = s;
    }
  }
  return out;
}

/**
 * Peak of each heatmap refined to sub-pixel: returns [{x, y, score}] in heatmap pixels.
 * 'dark': one Newton step on the log of the Gaussian-smoothed map (kept when the
 * Hessian is negative definite, the peak is not on the border and the step is within a
 * pixel); 'quarter': a quarter pixel toward the higher neighbour.
 */
export function decodeHeatmaps(hm, method, sigma) {
  const { h, w } = hm;
  return hm.planes.map((p) => {
    const idx = argmax(p);
    const px = idx % w;
    const py = Math.floor(idx / w);
    const score = p[idx];
    let x = px;
    let y = py;
    if (method === "quarter") {
      if (px > 0 && px < w - 1) x += 0.25 * Math.sign(p[py * w + px + 1] - p[py * w + px - 1]);
      if (py > 0 && py < h - 1) y += 0.25 * Math.sign(p[(py + 1) * w + px] - p[(py - 1) * w + px]);
      return { x, y, score };
    }
    if (h < 3 || w < 3 || !(score > 0) || px < 1 || py < 1 || px > w - 2 || py > h - 2) return { x, y, score };
    const sm = gaussianBlur(p, h, w, sigma);
    const peak = sm[argmax(sm)];
    const scale = peak > 0 ? score / Math.max(peak, 1e-12) : 0;
    const L = (dy, dx) => Math.log(Math.max(sm[(py + dy) * w + px + dx] * scale, 1e-10));
    const c = L(0, 0);
    const gx = 0.5 * (L(0, 1) - L(0, -1));
    const gy = 0.5 * (L(1, 0) - L(-1, 0));
    const hxx = L(0, 1) - 2 * c + L(0, -1);
    const hyy = L(1, 0) - 2 * c + L(-1, 0);
    const hxy = 0.25 * (L(1, 1) - L(1, -1) - L(-1, 1) + L(-1, -1));
    const det = hxx * hyy - hxy * hxy;
    if (det > 1e-12 && hxx < 0) {
      const ox = -(hyy * gx - hxy * gy) / det;
      const oy = -(hxx * gy - hxy * gx) / det;
      if (Math.abs(ox) <= 1 && Math.abs(oy) <= 1) {
        x += ox;
        y += oy;
      }
    }
    return { x, y, score };
  });
}

/**
 * Heatmaps of one crop -> keypoints in image pixels [{name, x, y, score}] and the person
 * score (HRNet's: mean peak over keypoints above the threshold).
 */
export function decodePose(hm, spec, crop) {
  const peaks = decodeHeatmaps(hm, spec.decoder, spec.sigma);
  const sx = spec.input.width / hm.w;
  const sy = spec.input.height / hm.h;
  const inv = cropAffine(crop, [spec.input.height, spec.input.width], true);
  let above = 0;
  let total = 0;
  const keypoints = peaks.map((p, j) => {
    const [x, y] = applyAffine(inv, (p.x + 0.5) * sx - 0.5, (p.y + 0.5) * sy - 0.5);
    if (p.score > spec.scoreThreshold) {
      above += 1;
      total += p.score;
    }
    return { name: spec.names[j] || `kp${j}`, x, y, score: p.score };
  });
  return { keypoints, personScore: above ? total / above : 0 };
}
