#!/usr/bin/env node
// The page's decoding code without a browser: read a JSON job on stdin, write the results
// as JSON on stdout. tests/test_web_app.py (pose) and tests/test_web_tasks.py (seg, det,
// cls) feed it the Python runtime's inputs and compare.
//
// pose job (no "task", or "task": "pose"):
//      {"meta": metadata.json,
//       "crops": [{"rgb_b64": H*W*3 bytes, "width", "height", "box": {x, y, w, h}}],
//       "decodes": [{"heatmaps": [...], "dims": [...], "flipped": [...] | null, "box": {...}}]}
// seg, det, cls job:
//      {"task": "seg" | "det" | "cls", "meta": metadata.json,
//       "inputs": [{"rgb_b64": H*W*3 bytes, "width", "height"}],   -> the model input's RGB bytes
//       "decodes": [{"raw": [...], "dims": [...], "image_size": [h, w] | null,
//                    "flipped": [...] | null (seg), "k": 5 (cls)}]}
//   seg decodes -> {labels_b64 (uint8, or int32 little-endian beyond 256 classes), height, width, present}
//   det decodes -> {boxes, scores, classes, labels, category_ids, coordinates, scale}
//                  (image_size: the letterbox of that picture maps the boxes back to it)
//   cls decodes -> {indices, probabilities, labels}
import {
  boxToCrop, cropAffine, decodePose, flipAverage, heatmapPlanes, poseSpec, warpAffineRGB,
} from "../src/pose.js";
import { decodeSeg, segInputRGB, segSpec } from "../src/seg.js";
import { decodeDet, detInputRGB, detSpec, letterboxContext } from "../src/det.js";
import { clsInputRGB, clsSpec, decodeCls } from "../src/cls.js";

const chunks = [];
for await (const c of process.stdin) chunks.push(c);
const job = JSON.parse(Buffer.concat(chunks).toString("utf8"));
const task = job.task || "pose";
if (!["pose", "seg", "det", "cls"].includes(task)) {
  process.stderr.write(`decode.mjs: job.task ${JSON.stringify(task)} is not known; valid: pose, seg, det, cls\n`);
  process.exit(2);
}
const out = task === "pose" ? runPose(job) : runTask(task, job);
process.stdout.write(JSON.stringify(out));

function rgbaOf(c) {
  const rgb = Buffer.from(c.rgb_b64, "base64");
  if (rgb.length !== c.width * c.height * 3) throw new RangeError(`rgb_b64 holds ${rgb.length} bytes, ${c.width} x ${c.height} x 3 expected`);
  const rgba = new Uint8Array(c.width * c.height * 4);
  for (let i = 0; i < c.width * c.height; i++) {
    rgba.set(rgb.subarray(i * 3, i * 3 + 3), i * 4);
    rgba[i * 4 + 3] = 255;
  }
  return rgba;
}

function runTask(name, job) {
  const spec = { seg: segSpec, det: detSpec, cls: clsSpec }[name](job.meta);
  // The page reads RGBA from a canvas: feed the same layout.
  const inputs = (job.inputs || []).map((c) => {
    const rgba = rgbaOf(c);
    const made = { seg: () => ({ rgb: segInputRGB(rgba, c.width, c.height, spec) }), det: () => detInputRGB(rgba, c.width, c.height, spec),
      cls: () => clsInputRGB(rgba, c.width, c.height, spec) }[name]();
    const { rgb, ...info } = made;
    return { ...info, rgb_b64: Buffer.from(rgb).toString("base64"), width: spec.input.width, height: spec.input.height };
  });
  const decodes = (job.decodes || []).map((d) => {
    if (name === "seg") {
      const r = decodeSeg(Float32Array.from(d.raw), d.dims, spec, d.image_size || null, d.flipped ? Float32Array.from(d.flipped) : null);
      const bytes = r.labels instanceof Uint8Array ? r.labels : new Uint8Array(r.labels.buffer);
      return { labels_b64: Buffer.from(bytes).toString("base64"), labels_dtype: r.labels instanceof Uint8Array ? "uint8" : "int32",
        height: r.height, width: r.width, present: r.present };
    }
    if (name === "det") {
      const lb = d.image_size ? letterboxContext(d.image_size, spec) : null;
      const r = decodeDet(Float32Array.from(d.raw), d.dims, spec, lb);
      return { boxes: r.boxes, scores: r.scores, classes: r.classes, labels: r.labels, category_ids: r.categoryIds,
        coordinates: r.coordinates, scale: lb ? lb.scale : null };
    }
    const top = decodeCls(Float32Array.from(d.raw), d.dims, spec, d.k || undefined);
    return { indices: top.map((t) => t.index), probabilities: top.map((t) => t.probability), labels: top.map((t) => t.label) };
  });
  return { task: name, inputs, decodes };
}

function runPose(job) {
  const spec = poseSpec(job.meta);
  const inputHW = [spec.input.height, spec.input.width];

  const crops = (job.crops || []).map((c) => {
    const rgb = Buffer.from(c.rgb_b64, "base64");
    const rgba = new Uint8Array(c.width * c.height * 4);
    for (let i = 0; i < c.width * c.height; i++) {
      rgba.set(rgb.subarray(i * 3, i * 3 + 3), i * 4);
      rgba[i * 4 + 3] = 255;
    }
    const crop = boxToCrop(c.box, inputHW, spec.padding);
    const out = warpAffineRGB(rgba, c.width, c.height, cropAffine(crop, inputHW), spec.input.width, spec.input.height);
    return { crop, rgb_b64: Buffer.from(out).toString("base64") };
  });

  const decodes = (job.decodes || []).map((d) => {
    let hm = heatmapPlanes(d.heatmaps, d.dims, spec);
    if (d.flipped) hm = flipAverage(hm, heatmapPlanes(d.flipped, d.dims, spec), spec.flipPerm);
    const crop = boxToCrop(d.box, inputHW, spec.padding);
    return decodePose(hm, spec, crop);
  });

  return { crops, decodes };
}
