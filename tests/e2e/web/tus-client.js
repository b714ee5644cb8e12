// The official tus-js-client against `linkfarm web`: starts an upload in 256 KiB chunks, aborts
// it after a third, then resumes it with a new Upload object on the same URL (HEAD, then PATCH
// from the server's offset). Usage: node tus-client.js URL FILE
"use strict";
const fs = require("fs");
const path = require("path");
const tus = require("tus-js-client");

const [url, file] = process.argv.slice(2);
const data = fs.readFileSync(file);
const common = {
  endpoint: url + "/files/",
  chunkSize: 256 * 1024,
  retryDelays: [0, 500, 1000],
  headers: { Authorization: "Basic " + Buffer.from("alice:pw-alice").toString("base64") },
  metadata: { filename: path.basename(file), folder: "loras", inbox: "models-inbox", filetype: "application/octet-stream" },
};

function first() {
  return new Promise((resolve, reject) => {
    let aborted = false;
    const up = new tus.Upload(data, {
      ...common,
      onChunkComplete(_chunk, sent, total) {
        if (!aborted && sent > total / 3) {
          aborted = true;
          up.abort().then(() => resolve({ url: up.url, sent }));
        }
      },
      onError: reject,
      onSuccess: () => reject(new Error("finished before the abort")),
    });
    up.start();
  });
}

function resume(uploadUrl) {
  return new Promise((resolve, reject) => {
    let firstOffset = null;
    const up = new tus.Upload(data, {
      ...common,
      uploadUrl,
      onProgress(sent) {
        if (firstOffset === null) firstOffset = sent;
      },
      onError: reject,
      onSuccess: () => resolve(firstOffset),
    });
    up.start();
  });
}

(async () => {
  const a = await first();
  console.log(`aborted at ${a.sent} bytes: ${a.url}`);
  const from = await resume(a.url);
  if (from === null || from < a.sent - 256 * 1024) throw new Error(`resumed from ${from}, not near ${a.sent}`);
  console.log(`resumed near ${a.sent} and finished ${data.length} bytes`);
})().catch((e) => {
  console.error(String(e && e.stack || e));
  process.exit(1);
});
