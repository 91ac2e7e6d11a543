#!/usr/bin/env node
// Drive the sample app in a real browser (Debian's chromium through playwright-core, which
// downloads nothing): a phone viewport, a photo upload with a person box typed into the
// page's form, then the camera fed from a video file. Writes what the page computed and
// screenshots to --out; tests/test_web_app.py compares the keypoints with the Python
// decoder's.
//
//   node test/browser.mjs --url http://127.0.0.1:PORT/ --image person.png --box x,y,w,h \
//       --video camera.y4m --out OUT_DIR [--chromium /usr/bin/chromium]
import { mkdir, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { chromium, devices } from "playwright-core";

function parse(argv) {
  const o = { chromium: process.env.CHROMIUM || "/usr/bin/chromium", timeout: 60000 };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, "");
    if (!["url", "image", "box", "video", "out", "chromium", "timeout"].includes(key) || argv[i + 1] === undefined) {
      process.stderr.write(`browser.mjs: bad argument ${argv[i]}\n`);
      process.exit(2);
    }
    o[key] = argv[i + 1];
  }
  for (const k of ["url", "image", "box", "video", "out"]) {
    if (!o[k]) {
      process.stderr.write(`browser.mjs: --${k} is required\n`);
      process.exit(2);
    }
  }
  o.timeout = Number(o.timeout);
  return o;
}

async function main() {
  const o = parse(process.argv.slice(2));
  await mkdir(o.out, { recursive: true });
  const browser = await chromium.launch({
    executablePath: o.chromium,
    headless: true,
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
      `--use-file-for-fake-video-capture=${resolve(o.video)}`,
    ],
  });
  const log = [];
  try {
    const phone = devices["Pixel 7"] || { viewport: { width: 412, height: 915 }, deviceScaleFactor: 2.6, isMobile: true, hasTouch: true };
    const context = await browser.newContext({ ...phone, permissions: ["camera"] });
    const page = await context.newPage();
    page.setDefaultTimeout(o.timeout);
    page.on("console", (m) => log.push(`${m.type()}: ${m.text()}`));
    page.on("pageerror", (e) => log.push(`pageerror: ${e.message}`));
    await page.goto(o.url);
    await page.evaluate(() => window.hrnetEdge.ready);
    const model = await page.evaluate(() => window.hrnetEdge.model);

    // Photo: type the person box into the form, then upload.
    const [x, y, w, h] = o.box.split(",");
    await page.click("details summary");
    await page.fill("input[name=x]", x);
    await page.fill("input[name=y]", y);
    await page.fill("input[name=w]", w);
    await page.fill("input[name=h]", h);
    await page.click("#box-form button[type=submit]");
    await page.setInputFiles("#image-input", resolve(o.image));
    await page.waitForFunction(() => window.hrnetEdge.error || (window.hrnetEdge.last && window.hrnetEdge.last.source.startsWith("photo")));
    const photo = await page.evaluate(() => ({ error: window.hrnetEdge.error, ...window.hrnetEdge.last }));
    await page.screenshot({ path: join(o.out, "photo.png"), fullPage: true });

    // Camera: the same person box, on frames of the fake camera.
    await page.click("#camera-button");
    await page.waitForFunction(() => window.hrnetEdge.error || (window.hrnetEdge.last && window.hrnetEdge.last.source === "camera"));
    // Freeze the frame the result came from before reading both.
    await page.click("#stop-button");
    const camera = await page.evaluate(() => ({ error: window.hrnetEdge.error, ...window.hrnetEdge.last }));
    const frame = await page.evaluate(() => window.hrnetEdge.frameDataURL());
    await writeFile(join(o.out, "camera_frame.png"), Buffer.from(frame.split(",")[1], "base64"));
    await page.screenshot({ path: join(o.out, "camera.png"), fullPage: true });

    const viewport = { ...page.viewportSize(), dpr: await page.evaluate(() => window.devicePixelRatio) };
    await writeFile(join(o.out, "result.json"), JSON.stringify({ model, viewport, photo, camera, log }, null, 1));
    process.stdout.write(`browser.mjs: wrote ${join(o.out, "result.json")}\n`);
  } finally {
    await browser.close();
  }
}

main().catch((err) => {
  process.stderr.write(`browser.mjs: ${err.stack || err}\n`);
  process.exit(1);
});
