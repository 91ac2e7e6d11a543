// Segmentation: the model input and the logits decoder, as metadata.json describes them
// (output.decoding.steps, output.classes, output.palette). Pure functions on typed
// arrays, no DOM: the page and the Node decoder check (test/decode.mjs) use the same code.
//
// Conventions (those of the Python runtime, hrnet_edge_runtime.decode.seg):
// * input: the whole picture resized to the input size, bilinear with half-pixel
//   centres and no anti-aliasing (the host's cv2.resize INTER_LINEAR; resize.js);
// * logits (C, h, w) resized bilinearly to the picture's size, align_corners=False
//   (sample at (i + 0.5) * h / H - 0.5, clamped at 0), in float32 as the runtime
//   computes them, then argmax over classes (ties: the lower class id);
// * flip test (when output.decoding.flip_test_in_checks): the mean of the logits and
//   those of the mirrored input, mirrored back.
import { MetadataError, inputSpec, metaGet as get, positiveInt } from "./pose.js";
import { resizeBilinear } from "./resize.js";

const f32 = Math.fround;
// The preprocessing this page makes; metadata.json must state it (output.decoding.steps).
export const SEG_RESIZE_STEP = "resize the image to the input size";

function classNames(meta, path, count) {
  const v = get(meta, path);
  if (!Array.isArray(v) || v.length !== count || !v.every((s) => typeof s === "string")) {
    throw new MetadataError(path, `must list ${count} names (one per output channel), got ${Array.isArray(v) ? `${v.length} entries` : JSON.stringify(v)}`);
  }
  return v.slice();
}

/** Distinct colours for n classes when the metadata has no palette (the project's
 *  default_palette: the class index's bits spread over R, G, B, high bits first). */
export function defaultPalette(n) {
  const out = [];
  for (let k = 0; k < n; k++) {
    const rgb = [0, 0, 0];
    let idx = k;
    for (let bit = 7; bit >= 0; bit--) {
      for (let c = 0; c < 3; c++) rgb[c] |= ((idx >> c) & 1) << bit;
      idx >>= 3;
    }
    out.push(rgb);
  }
  return out;
}

/** What the segmentation decoder needs from metadata.json, checked. */
export function segSpec(meta) {
  if (get(meta, "task") !== "seg") throw new MetadataError("task", `is ${JSON.stringify(meta.task)}; this is the segmentation decoder`);
  const numClasses = positiveInt(get(meta, "output.num_classes"), "output.num_classes");
  const classes = classNames(meta, "output.classes", numClasses);
  const palette = get(meta, "output.palette", []);
  if (!Array.isArray(palette) || (palette.length && (palette.length !== numClasses
      || !palette.every((c) => Array.isArray(c) && c.length === 3 && c.every((v) => Number.isInteger(v) && v >= 0 && v <= 255))))) {
    throw new MetadataError("output.palette", `must hold ${numClasses} [r, g, b] colours (one per class, 0..255) or be empty`);
  }
  const layout = get(meta, "output.layout");
  if (layout !== "NCHW" && layout !== "NHWC") {
    throw new MetadataError("output.layout", `${JSON.stringify(layout)} is not known; valid: NCHW, NHWC`);
  }
  const steps = get(meta, "output.decoding.steps");
  if (!Array.isArray(steps) || !steps.some((s) => typeof s === "string" && s.includes(SEG_RESIZE_STEP))) {
    throw new MetadataError("output.decoding.steps", `do not say "${SEG_RESIZE_STEP} (bilinear)": this page knows only that preprocessing`);
  }
  return {
    task: "seg",
    input: inputSpec(meta),
    numClasses,
    classes,
    palette: palette.length ? palette : defaultPalette(numClasses),
    paletteFromMetadata: palette.length > 0,
    layout,
    flipTest: Boolean(get(meta, "output.decoding.flip_test_in_checks", false)),
    ignoreIndex: get(meta, "output.ignore_index", 255),
  };
}

/** The model input's RGB bytes: the whole picture resized to the input size. */
export function segInputRGB(pix, w, h, spec, channels = 4) {
  return resizeBilinear(pix, w, h, spec.input.width, spec.input.height, channels);
}

/** An output (1, C, h, w) or (1, h, w, C) as one float32 array (C, h, w). */
export function segLogits(data, dims, spec) {
  if (dims.length !== 4 || dims[0] !== 1) throw new RangeError(`expected one image's logits, got dims ${JSON.stringify(dims)}`);
  const [c, h, w] = spec.layout === "NCHW" ? [dims[1], dims[2], dims[3]] : [dims[3], dims[1], dims[2]];
  if (c !== spec.numClasses) throw new RangeError(`the model gives ${c} logit maps, metadata says ${spec.numClasses}`);
  if (data.length !== c * h * w) throw new RangeError(`dims ${JSON.stringify(dims)} need ${c * h * w} values, got ${data.length}`);
  const out = new Float32Array(c * h * w);
  if (spec.layout === "NCHW") out.set(data);
  else for (let i = 0; i < h * w; i++) for (let j = 0; j < c; j++) out[j * h * w + i] = data[i * c + j];
  return { data: out, c, h, w };
}

/** Flip test: 0.5 * (logits + mirrored logits of the mirrored input), in float32. */
export function segFlipAverage(lg, flipped) {
  const { c, h, w } = lg;
  if (flipped.c !== c || flipped.h !== h || flipped.w !== w) throw new RangeError("the flipped logits differ in shape");
  const out = new Float32Array(c * h * w);
  for (let j = 0; j < c; j++) {
    for (let y = 0; y < h; y++) {
      const row = (j * h + y) * w;
      for (let x = 0; x < w; x++) out[row + x] = f32(0.5 * f32(lg.data[row + x] + flipped.data[row + w - 1 - x]));
    }
  }
  return { data: out, c, h, w };
}

/** align_corners=False taps of one axis, weights in float32 as the runtime's. */
function axisTaps(nIn, nOut) {
  const i0 = new Int32Array(nOut);
  const i1 = new Int32Array(nOut);
  const wt = new Float32Array(nOut);
  const om = new Float32Array(nOut);
  for (let i = 0; i < nOut; i++) {
    const src = Math.max(0, (i + 0.5) * (nIn / nOut) - 0.5);
    const a = Math.min(Math.floor(src), nIn - 1);
    i0[i] = a;
    i1[i] = Math.min(a + 1, nIn - 1);
    wt[i] = f32(src - a);
    om[i] = f32(1 - wt[i]);
  }
  return { i0, i1, wt, om };
}

/**
 * Logits (C, h, w) -> label map of outH x outW (Uint8Array, Int32Array beyond 256
 * classes): each class map resized bilinearly (rows, then columns, float32), argmax
 * over classes with ties to the lower id. One class at a time: no C x H x W array.
 */
export function labelMap(lg, outH, outW) {
  const { c, h, w } = lg;
  if (!Number.isInteger(outH) || !Number.isInteger(outW) || outH < 1 || outW < 1) {
    throw new RangeError(`label map size must be two positive integers, got ${outH} x ${outW}`);
  }
  const same = h === outH && w === outW;
  const ty = axisTaps(h, outH);
  const tx = axisTaps(w, outW);
  const best = new Float32Array(outH * outW);
  const labels = c <= 256 ? new Uint8Array(outH * outW) : new Int32Array(outH * outW);
  const rows = new Float32Array(outH * w);
  for (let j = 0; j < c; j++) {
    const p = lg.data.subarray(j * h * w, (j + 1) * h * w);
    if (!same) {
      for (let y = 0; y < outH; y++) {
        const a = ty.i0[y] * w;
        const b = ty.i1[y] * w;
        const wy = ty.wt[y];
        const oy = ty.om[y];
        for (let x = 0; x < w; x++) rows[y * w + x] = f32(f32(p[a + x] * oy) + f32(p[b + x] * wy));
      }
    }
    for (let y = 0; y < outH; y++) {
      for (let x = 0; x < outW; x++) {
        const v = same ? p[y * w + x]
          : f32(f32(rows[y * w + tx.i0[x]] * tx.om[x]) + f32(rows[y * w + tx.i1[x]] * tx.wt[x]));
        const i = y * outW + x;
        if (j === 0 || v > best[i]) {
          best[i] = v;
          labels[i] = j;
        }
      }
    }
  }
  return labels;
}

/** Pixels of each class in a label map: [{index, name, pixels, fraction}] of the classes present, most pixels first. */
export function classesPresent(labels, spec) {
  const counts = new Float64Array(spec.numClasses);
  for (let i = 0; i < labels.length; i++) counts[labels[i]] += 1;
  const out = [];
  for (let j = 0; j < spec.numClasses; j++) {
    if (counts[j] > 0) out.push({ index: j, name: spec.classes[j], pixels: counts[j], fraction: counts[j] / labels.length, color: spec.palette[j] });
  }
  return out.sort((a, b) => b.pixels - a.pixels || a.index - b.index);
}

/** RGBA bytes of a label map in the palette's colours, with the given alpha (0..255). */
export function colorize(labels, palette, alpha = 255) {
  const out = new Uint8ClampedArray(labels.length * 4);
  for (let i = 0; i < labels.length; i++) {
    const col = palette[labels[i]];
    if (!col) throw new RangeError(`label ${labels[i]} has no palette colour: the palette holds ${palette.length}`);
    out[i * 4] = col[0];
    out[i * 4 + 1] = col[1];
    out[i * 4 + 2] = col[2];
    out[i * 4 + 3] = alpha;
  }
  return out;
}

/** Logits of one picture (and of its mirror, or null) -> {labels, height, width, present}. */
export function decodeSeg(data, dims, spec, imageHW, flipped = null) {
  let lg = segLogits(data, dims, spec);
  if (flipped) lg = segFlipAverage(lg, segLogits(flipped, dims, spec));
  const [H, W] = imageHW || [spec.input.height, spec.input.width];
  const labels = labelMap(lg, H, W);
  return { labels, height: H, width: W, present: classesPresent(labels, spec) };
}
