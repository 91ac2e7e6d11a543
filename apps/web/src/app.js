// The page: load ./model/model.onnx and its metadata.json with onnxruntime-web (wasm),
// make the model input its metadata describes from an uploaded picture or the camera,
// run the model, decode and draw. metadata.task picks what happens:
// * pose: crop the person box, run (twice with the flip test when the checks used it),
//   keypoints and skeleton;
// * seg: resize the picture to the input, label map at the picture's size (flip test
//   when the checks used it), a colour mask with the metadata's palette and a legend;
// * det: letterbox, boxes back in the picture with class name and score;
// * cls: short side to input / resize_ratio, centre crop, the top-5 with probabilities.
import * as ort from "../ort/ort.wasm.min.mjs";
import {
  MetadataError, boxToCrop, cropAffine, decodePose, flipAverage, heatmapPlanes, mirrorRGB, poseSpec, rgbToInput, warpAffineRGB,
} from "./pose.js";
import { colorize, decodeSeg, segInputRGB, segSpec } from "./seg.js";
import { decodeDet, detInputRGB, detSpec } from "./det.js";
import { clsInputRGB, clsSpec, decodeCls } from "./cls.js";

const SPECS = { pose: poseSpec, seg: segSpec, det: detSpec, cls: clsSpec };
const TASK_TITLES = { pose: "pose", seg: "segmentation", det: "detection", cls: "classification" };

const $ = (id) => document.getElementById(id);
const view = $("view");
const ctx = view.getContext("2d");
// The picture being processed, at its own size (the crop reads its exact pixels).
const frame = document.createElement("canvas");
const frameCtx = frame.getContext("2d", { willReadFrequently: true });
// The picture of the last result (the camera loop refills `frame` while a result is shown).
const kept = document.createElement("canvas");

const state = { session: null, spec: null, meta: null, task: null, box: null, camera: null, busy: false, frames: 0 };
// The last label map (seg), for api.labelsBase64().
let lastLabels = null;
const api = { last: null, frames: 0, error: null };
window.hrnetEdge = api;

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

async function sha256Hex(buffer) {
  if (!crypto.subtle) return null; // only in a secure context (https or 127.0.0.1)
  const digest = await crypto.subtle.digest("SHA-256", buffer);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function fetchOk(url) {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  return res;
}

async function loadModel() {
  ort.env.wasm.wasmPaths = new URL("../ort/", import.meta.url).href;
  // Threads need a cross-origin isolated page (serve.mjs sends the headers).
  ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
  const meta = await (await fetchOk("./model/metadata.json")).json();
  const task = meta.task;
  if (!Object.hasOwn(SPECS, task)) {
    throw new MetadataError("task", `${JSON.stringify(task)} is not known; valid: ${Object.keys(SPECS).join(", ")}`);
  }
  const spec = SPECS[task](meta);
  setupTask(task);
  const file = (meta.artifact && meta.artifact.file) || "model.onnx";
  if (!file.endsWith(".onnx")) throw new Error(`this page runs ONNX artifacts; metadata.json names ${file}`);
  const bytes = await (await fetchOk(`./model/${file}`)).arrayBuffer();
  const want = meta.artifact && meta.artifact.sha256;
  const got = await sha256Hex(bytes);
  if (want && got && want !== got) {
    throw new Error(`${file} has sha256 ${got.slice(0, 12)}…, metadata.json records ${want.slice(0, 12)}…: the artifact is not the one exported`);
  }
  const session = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"], graphOptimizationLevel: "all" });
  Object.assign(state, { session, spec, meta, task });
  api.model = {
    task, variant: meta.variant, target: meta.target, precision: meta.precision, sha256: got,
    sha256Verified: Boolean(want && got), threads: ort.env.wasm.numThreads, ortVersion: ort.env.versions && ort.env.versions.web,
  };
  $("model-info").textContent = `${meta.variant} ${meta.target}-${meta.precision}, input ${spec.input.height}x${spec.input.width} `
    + `${spec.input.dtype}, ${taskSummary(task, spec)}; sha256 ${got ? (want ? "verified" : "not recorded") : "not checked (insecure page)"}; `
    + `onnxruntime-web wasm, ${ort.env.wasm.numThreads} thread(s)`;
  $("camera-button").disabled = !(navigator.mediaDevices && navigator.mediaDevices.getUserMedia);
}

function taskSummary(task, spec) {
  if (task === "pose") return `${spec.decoder} decoder${spec.flipTest ? " + flip" : ""}`;
  if (task === "seg") return `${spec.numClasses} classes${spec.flipTest ? " + flip" : ""}${spec.paletteFromMetadata ? "" : " (default palette)"}`;
  if (task === "det") return `${spec.numClasses} classes, letterbox, score > ${spec.config.score_threshold}, NMS IoU ${spec.config.iou_threshold}`;
  return `${spec.numClasses} classes, centre crop (resize ratio ${spec.resizeRatio})`;
}

/** Title and controls of the task: the person box and the keypoint table are pose's. */
function setupTask(task) {
  document.title = `hrnet-edge: ${TASK_TITLES[task]} in the browser`;
  $("title").textContent = `hrnet-edge ${TASK_TITLES[task]}`;
  const pose = task === "pose";
  $("box-details").hidden = !pose;
  $("keypoints").hidden = !pose;
  $("results").hidden = pose;
}

/** Run the model on the input's RGB bytes: its first output {data, dims}. */
async function runModel(rgb) {
  const { session, spec } = state;
  const x = rgbToInput(rgb, spec.input);
  const inputName = session.inputNames.includes(spec.input.name) ? spec.input.name : session.inputNames[0];
  const outputs = await session.run({ [inputName]: new ort.Tensor(x.type, x.data, x.dims) });
  return outputs[session.outputNames[0]];
}

async function infer(rgb) {
  const out = await runModel(rgb);
  return heatmapPlanes(out.data, out.dims, state.spec);
}

/** Make the input, run and decode the picture now on the frame canvas. */
async function processFrame(source) {
  if (state.task !== "pose") return processTaskFrame(source);
  const { spec } = state;
  const { width, height } = frame;
  const pixels = frameCtx.getImageData(0, 0, width, height);
  const rgba = pixels.data;
  const box = state.box || { x: 0, y: 0, w: width, h: height };
  const inputHW = [spec.input.height, spec.input.width];
  const crop = boxToCrop(box, inputHW, spec.padding);
  const rgb = warpAffineRGB(rgba, width, height, cropAffine(crop, inputHW), spec.input.width, spec.input.height);
  const t0 = performance.now();
  let hm = await infer(rgb);
  if (spec.flipTest) hm = flipAverage(hm, await infer(mirrorRGB(rgb, spec.input.width, spec.input.height)), spec.flipPerm);
  const ms = performance.now() - t0;
  const result = decodePose(hm, spec, crop);
  // The result and the picture it came from change together.
  kept.width = width;
  kept.height = height;
  kept.getContext("2d").putImageData(pixels, 0, 0);
  api.frames += 1;
  api.last = { task: "pose", source, width, height, box, crop, ms, ...result };
  draw(result, box);
  setStatus(`${source}: ${width}x${height}, person score ${result.personScore.toFixed(3)}, `
    + `${ms.toFixed(1)} ms for ${spec.flipTest ? 2 : 1} inference(s)`);
  fillTable(result.keypoints);
  return api.last;
}

/** seg, det, cls: the whole picture through the task's preprocessing, decoder and drawing. */
async function processTaskFrame(source) {
  const { spec, task } = state;
  const { width, height } = frame;
  const pixels = frameCtx.getImageData(0, 0, width, height);
  const rgba = pixels.data;
  const t0 = performance.now();
  let result;
  let runs = 1;
  if (task === "seg") {
    const rgb = segInputRGB(rgba, width, height, spec);
    const out = await runModel(rgb);
    const data = Float32Array.from(out.data);
    let flipped = null;
    if (spec.flipTest) {
      flipped = Float32Array.from((await runModel(mirrorRGB(rgb, spec.input.width, spec.input.height))).data);
      runs = 2;
    }
    const seg = decodeSeg(data, out.dims, spec, [height, width], flipped);
    lastLabels = seg.labels;
    result = { flip: Boolean(flipped), labelsSize: [seg.height, seg.width], present: seg.present };
  } else if (task === "det") {
    const { rgb, scale } = detInputRGB(rgba, width, height, spec);
    const out = await runModel(rgb);
    const dets = decodeDet(out.data, out.dims, spec, { scale, origHW: [height, width] });
    result = {
      scale,
      detections: dets.boxes.map((b, i) => ({
        x1: b[0], y1: b[1], x2: b[2], y2: b[3], score: dets.scores[i], classIndex: dets.classes[i],
        label: dets.labels[i], categoryId: dets.categoryIds ? dets.categoryIds[i] : null,
      })),
    };
  } else {
    const view = clsInputRGB(rgba, width, height, spec);
    const out = await runModel(view.rgb);
    // The view in picture pixels (the centre crop of the resized picture, scaled back).
    const [nh, nw] = view.resized;
    const region = { x: view.left * (width / nw), y: view.top * (height / nh), w: spec.input.width * (width / nw), h: spec.input.height * (height / nh) };
    result = { view: region, top: decodeCls(out.data, out.dims, spec) };
  }
  const ms = performance.now() - t0;
  kept.width = width;
  kept.height = height;
  kept.getContext("2d").putImageData(pixels, 0, 0);
  api.frames += 1;
  api.last = { task, source, width, height, ms, ...result };
  drawTask(task, result);
  fillResults(task, result);
  const what = task === "seg" ? `${result.present.length} classes present`
    : task === "det" ? `${result.detections.length} detections`
      : `top-1 ${result.top[0].label} ${(100 * result.top[0].probability).toFixed(1)} %`;
  setStatus(`${source}: ${width}x${height}, ${what}, ${ms.toFixed(1)} ms for ${runs} inference(s) and decoding`);
  return api.last;
}

const overlay = document.createElement("canvas");

/** The picture of the last result on the view; returns a line width for it (size / per). */
function paintPicture(per) {
  view.width = kept.width;
  view.height = kept.height;
  ctx.drawImage(kept, 0, 0);
  return Math.max(2, Math.round(Math.max(kept.width, kept.height) / per));
}

function drawTask(task, result) {
  const { spec } = state;
  const unit = paintPicture(240);
  if (task === "seg") {
    overlay.width = kept.width;
    overlay.height = kept.height;
    overlay.getContext("2d").putImageData(new ImageData(colorize(lastLabels, spec.palette, 140), kept.width, kept.height), 0, 0);
    ctx.drawImage(overlay, 0, 0);
  } else if (task === "det") {
    ctx.lineWidth = unit;
    ctx.font = `${6 * unit}px system-ui, sans-serif`;
    ctx.textBaseline = "top";
    for (const d of [...result.detections].reverse()) { // the best drawn last, on top
      const hue = (d.classIndex * 137.5) % 360;
      ctx.strokeStyle = `hsl(${hue} 90% 55%)`;
      ctx.strokeRect(d.x1, d.y1, d.x2 - d.x1, d.y2 - d.y1);
      const text = `${d.label} ${d.score.toFixed(2)}`;
      const tw = ctx.measureText(text).width + 2 * unit;
      const ty = d.y1 >= 7 * unit ? d.y1 - 7 * unit : d.y1;
      ctx.fillStyle = `hsl(${hue} 90% 35% / 0.85)`;
      ctx.fillRect(d.x1, ty, tw, 7 * unit);
      ctx.fillStyle = "#fff";
      ctx.fillText(text, d.x1 + unit, ty + 0.5 * unit);
    }
  } else {
    const r = result.view;
    ctx.setLineDash([4 * unit, 3 * unit]);
    ctx.strokeStyle = "rgba(255,255,255,0.8)";
    ctx.lineWidth = unit / 2;
    ctx.strokeRect(r.x, r.y, r.w, r.h);
    ctx.setLineDash([]);
  }
}

/** The legend (seg), detections (det) or top-5 (cls) as a list under the picture. */
function fillResults(task, result) {
  const item = (text, color) => {
    const li = document.createElement("li");
    if (color) {
      const sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.background = color;
      li.append(sw);
    }
    li.append(document.createTextNode(text));
    return li;
  };
  let rows;
  if (task === "seg") {
    rows = result.present.map((c) => item(`${c.name}: ${(100 * c.fraction).toFixed(1)} %`, `rgb(${c.color.join(",")})`));
  } else if (task === "det") {
    rows = result.detections.map((d) => item(`${d.label} ${d.score.toFixed(3)}: `
      + `(${d.x1.toFixed(1)}, ${d.y1.toFixed(1)}) - (${d.x2.toFixed(1)}, ${d.y2.toFixed(1)})`, `hsl(${(d.classIndex * 137.5) % 360} 90% 55%)`));
  } else {
    rows = result.top.map((t, i) => item(`${i + 1}. ${t.label}: ${(100 * t.probability).toFixed(2)} %`));
  }
  $("results").replaceChildren(...rows);
}

function draw(result, box) {
  const { spec } = state;
  const unit = paintPicture(160);
  ctx.strokeStyle = "rgba(255,255,255,0.5)";
  ctx.lineWidth = 1;
  ctx.strokeRect(box.x, box.y, box.w, box.h);
  const kp = result.keypoints;
  const shown = (k) => k.score > spec.scoreThreshold;
  ctx.lineWidth = unit;
  ctx.strokeStyle = "#2af598";
  for (const [a, b] of spec.skeleton) {
    if (!kp[a] || !kp[b] || !shown(kp[a]) || !shown(kp[b])) continue;
    ctx.beginPath();
    ctx.moveTo(kp[a].x, kp[a].y);
    ctx.lineTo(kp[b].x, kp[b].y);
    ctx.stroke();
  }
  for (const k of kp) {
    ctx.fillStyle = shown(k) ? "#ff3b6b" : "rgba(255,59,107,0.25)";
    ctx.beginPath();
    ctx.arc(k.x, k.y, unit * 1.5, 0, 2 * Math.PI);
    ctx.fill();
  }
}

function fillTable(keypoints) {
  const body = $("keypoints").querySelector("tbody");
  body.replaceChildren(...keypoints.map((k) => {
    const tr = document.createElement("tr");
    for (const v of [k.name, k.x.toFixed(1), k.y.toFixed(1), k.score.toFixed(3)]) {
      const td = document.createElement("td");
      td.textContent = v;
      tr.append(td);
    }
    return tr;
  }));
}

async function runImage(blob, name) {
  // No colour-space conversion: the crop sees the file's own pixels, as the checks do.
  const bitmap = await createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  frame.width = bitmap.width;
  frame.height = bitmap.height;
  frameCtx.drawImage(bitmap, 0, 0);
  bitmap.close();
  return processFrame(`photo ${name}`);
}

async function startCamera() {
  stopCamera();
  const stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" }, audio: false });
  const video = $("video");
  video.srcObject = stream;
  await video.play();
  state.camera = stream;
  $("stop-button").hidden = false;
  const tick = async () => {
    if (state.camera !== stream) return;
    if (!state.busy && video.videoWidth > 0) {
      state.busy = true;
      try {
        frame.width = video.videoWidth;
        frame.height = video.videoHeight;
        frameCtx.drawImage(video, 0, 0);
        await processFrame("camera");
      } catch (err) {
        fail(err);
      } finally {
        state.busy = false;
      }
    }
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}

function stopCamera() {
  if (state.camera) state.camera.getTracks().forEach((t) => t.stop());
  state.camera = null;
  $("stop-button").hidden = true;
}

function fail(err) {
  api.error = String(err && err.message ? err.message : err);
  setStatus(api.error, true);
}

function readBox(form) {
  const v = Object.fromEntries(["x", "y", "w", "h"].map((k) => [k, Number(form.elements[k].value)]));
  if (![v.x, v.y, v.w, v.h].every(Number.isFinite) || v.w <= 0 || v.h <= 0) {
    throw new RangeError("the person box needs numbers x, y and a positive w and h");
  }
  return v;
}

// The picture currently on the frame canvas, as a PNG data URL (what the tests compare).
api.frameDataURL = () => kept.toDataURL("image/png");
// The last label map (seg) as base64 of its bytes (uint8, int32 beyond 256 classes), row-major.
api.labelsBase64 = () => {
  if (!lastLabels) return null;
  const bytes = new Uint8Array(lastLabels.buffer, lastLabels.byteOffset, lastLabels.byteLength);
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
};
api.setBox = (box) => { state.box = box; };

api.ready = loadModel().catch((err) => {
  $("model-info").textContent = String(err.message || err);
  $("model-info").classList.add("error");
  api.error = String(err.message || err);
  throw err;
});

$("image-input").addEventListener("change", async (e) => {
  const file = e.target.files && e.target.files[0];
  if (!file) return;
  stopCamera();
  try {
    await api.ready;
    await runImage(file, file.name);
  } catch (err) {
    fail(err);
  }
});
$("camera-button").addEventListener("click", () => startCamera().catch(fail));
$("stop-button").addEventListener("click", stopCamera);
$("box-form").addEventListener("submit", (e) => {
  e.preventDefault();
  try {
    state.box = readBox(e.target);
    setStatus(`person box ${JSON.stringify(state.box)}: pick a photo or start the camera`);
  } catch (err) {
    fail(err);
  }
});
$("box-form").addEventListener("reset", () => { state.box = null; });
const params = new URLSearchParams(location.search);
if (params.has("box")) {
  const [x, y, w, h] = params.get("box").split(",").map(Number);
  state.box = { x, y, w, h };
}
