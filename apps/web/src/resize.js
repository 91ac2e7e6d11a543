// Whole-picture resizing for the seg, det and cls inputs, as the device runtime does it
// (hrnet_edge_runtime.transforms, which reproduces the host's OpenCV data loaders):
// * resizeBilinear: cv2.resize INTER_LINEAR: two taps per axis at half-pixel centres,
//   no filtering when shrinking (segmentation resize, detection letterbox);
// * resizeArea: cv2.resize INTER_AREA when shrinking (classification view);
// * letterbox: scale by min(H / h, W / w), top-left of a grey-114 frame (detection);
// * centreCropView: scale to just cover input / resize_ratio, cut out the centre (cls).
// Pure functions: the source is `pix` (RGBA from a canvas' getImageData, or RGB: give
// `channels`), the result H x W x 3 RGB bytes. Arithmetic in float64, rounded half to
// even (NumPy's rint), so the bytes equal the runtime's.

// The grey the host's detection letterbox pads the right and bottom with.
export const LETTERBOX_PAD = 114;

/** Python's round() / NumPy's rint: halves to even. */
export function roundHalfEven(v) {
  const f = Math.floor(v);
  const d = v - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

function toByte(v) {
  const r = roundHalfEven(v);
  return r < 0 ? 0 : r > 255 ? 255 : r;
}

function checkSize(outW, outH) {
  if (!Number.isInteger(outW) || !Number.isInteger(outH) || outW < 1 || outH < 1) {
    throw new RangeError(`an output size must be two positive integers, got ${outW} x ${outH}`);
  }
}

function checkSource(pix, w, h, channels) {
  if (!Number.isInteger(w) || !Number.isInteger(h) || w < 1 || h < 1) throw new RangeError(`a picture must be at least 1 x 1, got ${w} x ${h}`);
  if (channels !== 3 && channels !== 4) throw new RangeError(`channels must be 3 (RGB) or 4 (RGBA), got ${channels}`);
  if (pix.length !== w * h * channels) throw new RangeError(`${w} x ${h} x ${channels} needs ${w * h * channels} bytes, got ${pix.length}`);
}

/** RGB bytes of the source (alpha dropped), unchanged in size. */
export function toRGB(pix, w, h, channels = 4) {
  checkSource(pix, w, h, channels);
  if (channels === 3) return Uint8Array.from(pix);
  const out = new Uint8Array(w * h * 3);
  for (let i = 0; i < w * h; i++) {
    out[i * 3] = pix[i * 4];
    out[i * 3 + 1] = pix[i * 4 + 1];
    out[i * 3 + 2] = pix[i * 4 + 2];
  }
  return out;
}

/** INTER_LINEAR taps of one axis: src = (i + 0.5) * nIn / nOut - 0.5, clamped to the first and last pixel. */
export function linearTaps(nIn, nOut) {
  const i0 = new Int32Array(nOut);
  const i1 = new Int32Array(nOut);
  const frac = new Float64Array(nOut);
  for (let i = 0; i < nOut; i++) {
    const src = (i + 0.5) * (nIn / nOut) - 0.5;
    let a = Math.floor(src);
    let f = src - a;
    if (a < 0) f = 0;
    a = Math.min(Math.max(a, 0), nIn - 1);
    if (a >= nIn - 1) f = 0;
    i0[i] = a;
    i1[i] = Math.min(a + 1, nIn - 1);
    frac[i] = f;
  }
  return { i0, i1, frac };
}

/** Bilinear resize (INTER_LINEAR, no anti-aliasing) to outW x outH RGB bytes. */
export function resizeBilinear(pix, w, h, outW, outH, channels = 4) {
  checkSource(pix, w, h, channels);
  checkSize(outW, outH);
  if (w === outW && h === outH) return toRGB(pix, w, h, channels);
  const ty = linearTaps(h, outH);
  const tx = linearTaps(w, outW);
  // Rows first (as the runtime), in float64.
  const rows = new Float64Array(outH * w * 3);
  for (let y = 0; y < outH; y++) {
    const a = ty.i0[y] * w;
    const b = ty.i1[y] * w;
    const fy = ty.frac[y];
    for (let x = 0; x < w; x++) {
      for (let c = 0; c < 3; c++) {
        rows[(y * w + x) * 3 + c] = pix[(a + x) * channels + c] * (1 - fy) + pix[(b + x) * channels + c] * fy;
      }
    }
  }
  const out = new Uint8Array(outW * outH * 3);
  for (let y = 0; y < outH; y++) {
    for (let x = 0; x < outW; x++) {
      const a = (y * w + tx.i0[x]) * 3;
      const b = (y * w + tx.i1[x]) * 3;
      const fx = tx.frac[x];
      for (let c = 0; c < 3; c++) out[(y * outW + x) * 3 + c] = toByte(rows[a + c] * (1 - fx) + rows[b + c] * fx);
    }
  }
  return out;
}

/** Area weights of one axis: output i averages [i * nIn / nOut, (i + 1) * nIn / nOut), each input pixel by its overlap. */
function areaTaps(nIn, nOut) {
  const taps = [];
  const step = nIn / nOut;
  for (let i = 0; i < nOut; i++) {
    const lo = i * step;
    const hi = (i + 1) * step;
    const idx = [];
    const wts = [];
    let sum = 0;
    for (let p = Math.max(0, Math.floor(lo)); p < Math.min(nIn, Math.ceil(hi)); p++) {
      const o = Math.min(hi, p + 1) - Math.max(lo, p);
      if (o > 0) {
        idx.push(p);
        wts.push(o);
        sum += o;
      }
    }
    taps.push({ idx, wts: wts.map((v) => v / sum) });
  }
  return taps;
}

/** Area-averaging resize (INTER_AREA when shrinking) to outW x outH RGB bytes. */
export function resizeArea(pix, w, h, outW, outH, channels = 4) {
  checkSource(pix, w, h, channels);
  checkSize(outW, outH);
  if (w === outW && h === outH) return toRGB(pix, w, h, channels);
  const ty = areaTaps(h, outH);
  const tx = areaTaps(w, outW);
  const rows = new Float64Array(outH * w * 3);
  for (let y = 0; y < outH; y++) {
    const { idx, wts } = ty[y];
    for (let x = 0; x < w; x++) {
      for (let c = 0; c < 3; c++) {
        let s = 0;
        for (let k = 0; k < idx.length; k++) s += wts[k] * pix[(idx[k] * w + x) * channels + c];
        rows[(y * w + x) * 3 + c] = s;
      }
    }
  }
  const out = new Uint8Array(outW * outH * 3);
  for (let y = 0; y < outH; y++) {
    for (let x = 0; x < outW; x++) {
      const { idx, wts } = tx[x];
      for (let c = 0; c < 3; c++) {
        let s = 0;
        for (let k = 0; k < idx.length; k++) s += wts[k] * rows[(y * w + idx[k]) * 3 + c];
        out[(y * outW + x) * 3 + c] = toByte(s);
      }
    }
  }
  return out;
}

/**
 * The detection letterbox: the picture scaled by s = min(H / h, W / w) to
 * round(h * s) x round(w * s) (at least 1, bilinear), at the top-left of an H x W frame
 * of grey `pad`. Returns {rgb, scale, resized: [rows, cols]}; original = input / scale.
 */
export function letterbox(pix, w, h, inputH, inputW, channels = 4, pad = LETTERBOX_PAD) {
  checkSource(pix, w, h, channels);
  checkSize(inputW, inputH);
  const scale = Math.min(inputH / h, inputW / w);
  const nh = Math.max(1, roundHalfEven(h * scale));
  const nw = Math.max(1, roundHalfEven(w * scale));
  const resized = resizeBilinear(pix, w, h, nw, nh, channels);
  const rgb = new Uint8Array(inputW * inputH * 3).fill(pad);
  for (let y = 0; y < Math.min(nh, inputH); y++) {
    for (let x = 0; x < Math.min(nw, inputW); x++) {
      for (let c = 0; c < 3; c++) rgb[(y * inputW + x) * 3 + c] = resized[(y * nw + x) * 3 + c];
    }
  }
  return { rgb, scale, resized: [nh, nw] };
}

/**
 * The classification view: scaled to just cover the input / resizeRatio (area averaging
 * when an axis shrinks, else bilinear), then the centre input-sized block cut out.
 * Returns {rgb, resized: [rows, cols], top, left}.
 */
export function centreCropView(pix, w, h, inputH, inputW, resizeRatio, channels = 4) {
  checkSource(pix, w, h, channels);
  checkSize(inputW, inputH);
  if (!(resizeRatio > 0 && resizeRatio <= 1)) throw new RangeError(`resize_ratio must be in (0, 1], got ${resizeRatio}`);
  const scale = Math.max(roundHalfEven(inputH / resizeRatio) / h, roundHalfEven(inputW / resizeRatio) / w);
  const nh = Math.max(inputH, roundHalfEven(h * scale));
  const nw = Math.max(inputW, roundHalfEven(w * scale));
  let img;
  if (nh === h && nw === w) img = toRGB(pix, w, h, channels);
  else if (nh < h || nw < w) img = resizeArea(pix, w, h, nw, nh, channels);
  else img = resizeBilinear(pix, w, h, nw, nh, channels);
  const top = roundHalfEven((nh - inputH) / 2);
  const left = roundHalfEven((nw - inputW) / 2);
  const rgb = new Uint8Array(inputW * inputH * 3);
  for (let y = 0; y < inputH; y++) {
    rgb.set(img.subarray(((top + y) * nw + left) * 3, ((top + y) * nw + left + inputW) * 3), y * inputW * 3);
  }
  return { rgb, resized: [nh, nw], top, left };
}
