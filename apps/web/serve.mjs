#!/usr/bin/env node
// Serve the sample app on 127.0.0.1 only: the page (index.html, src/), onnxruntime-web's
// files from node_modules (/ort/), and one exported artifact folder (/model/: model.onnx
// and metadata.json). No other folder of the machine is reachable through it.
//
//   node serve.mjs --model ../../runs/default/exports/onnx-fp32 [--port 8080]
//
// A phone reaches it over USB with `adb reverse tcp:8080 tcp:8080` (Android), where
// http://127.0.0.1:8080 is a secure context, so the camera works without HTTPS.
import { createServer } from "node:http";
import { readFile, stat } from "node:fs/promises";
import { dirname, extname, join, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url));
const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".wasm": "application/wasm",
  ".onnx": "application/octet-stream",
  ".png": "image/png",
  ".jpg": "image/jpeg",
};

function usage(message) {
  process.stderr.write(`serve.mjs: ${message}\nusage: node serve.mjs --model ARTIFACT_DIR [--port 8080]\n`);
  process.exit(2);
}

export function parseArgs(argv) {
  const opts = { port: 8080, model: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--port") {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v < 0 || v > 65535) usage(`--port must be an integer 0..65535, got ${argv[i]}`);
      opts.port = v;
    } else if (a === "--model") {
      opts.model = argv[++i];
      if (!opts.model) usage("--model needs an artifact folder");
    } else {
      usage(`unknown argument ${JSON.stringify(a)}`);
    }
  }
  if (!opts.model) usage("--model ARTIFACT_DIR is required (a folder with model.onnx and metadata.json)");
  return opts;
}

// Only these roots are served; a request path is resolved inside its root or refused.
function roots(modelDir) {
  return [
    ["/ort/", join(HERE, "node_modules", "onnxruntime-web", "dist")],
    ["/model/", modelDir],
    ["/src/", join(HERE, "src")],
  ];
}

function locate(urlPath, modelDir) {
  let path;
  try {
    path = decodeURIComponent(urlPath.split("?")[0]);
  } catch {
    return null;
  }
  if (path === "/" || path === "/index.html") return join(HERE, "index.html");
  if (path === "/style.css") return join(HERE, "style.css");
  for (const [prefix, root] of roots(modelDir)) {
    if (path.startsWith(prefix)) {
      const file = resolve(root, "." + path.slice(prefix.length - 1));
      return file.startsWith(resolve(root) + sep) ? file : null;
    }
  }
  return null;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const modelDir = resolve(opts.model);
  for (const name of ["model.onnx", "metadata.json"]) {
    try {
      await stat(join(modelDir, name));
    } catch {
      usage(`${join(modelDir, name)} does not exist: --model must be an exported ONNX artifact folder (exports/onnx-*)`);
    }
  }
  try {
    await stat(join(HERE, "node_modules", "onnxruntime-web", "dist"));
  } catch {
    usage(`onnxruntime-web is not installed: run \`npm ci\` in ${HERE}`);
  }
  const server = createServer(async (req, res) => {
    const file = req.method === "GET" || req.method === "HEAD" ? locate(req.url, modelDir) : null;
    let body;
    try {
      body = file && (await readFile(file));
    } catch {
      body = null;
    }
    if (!body) {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
      return;
    }
    res.writeHead(200, {
      "content-type": TYPES[extname(file)] || "application/octet-stream",
      "cache-control": "no-store",
      // Cross-origin isolation lets onnxruntime-web use wasm threads.
      "cross-origin-opener-policy": "same-origin",
      "cross-origin-embedder-policy": "require-corp",
    });
    res.end(req.method === "HEAD" ? undefined : body);
  });
  server.on("error", (err) => usage(`cannot listen on 127.0.0.1:${opts.port}: ${err.message}`));
  server.listen(opts.port, "127.0.0.1", () => {
    const { port } = server.address();
    // The first line is read by the tests: keep its form.
    process.stdout.write(`serving http://127.0.0.1:${port}/ (model: ${modelDir})\n`);
  });
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main();
