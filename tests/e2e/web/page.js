// The upload page in headless Chromium (playwright-core, Debian's /usr/bin/chromium): a wrong
// password is refused, the right one logs in, `loras` is chosen with the keyboard, two files go
// in through the file input, and the page shows one accepted (with its sha256 and short hash)
// and one refused (with the .why.txt text the daemon wrote). Screenshots: login.png, page.png.
// A third file is uploaded while the service is killed and restarted (the shell does that when
// CONTROL_DIR/restart-now appears, and answers with CONTROL_DIR/restarted); the page resumes it.
// Usage: node page.js URL FILE1 FILE2 FILE3 ARTIFACT_DIR CONTROL_DIR
"use strict";
const fs = require("fs");
const { chromium } = require("playwright-core");

const [url, f1, f2, f3, art, control] = process.argv.slice(2);

async function until(what, f, seconds) {
  const end = Date.now() + seconds * 1000;
  while (!(await f())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

(async () => {
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1100, height: 860 } });
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    // The wrong password's 401 is expected; any other failed resource or script error is not.
    page.on("console", (m) => { if (m.type() === "error" && !m.text().includes("status of 401")) errors.push(m.text()); });
    await page.goto(url + "/");
    await page.screenshot({ path: `${art}/login.png` });
    await page.fill("#user", "alice");
    await page.fill("#password", "wrong");
    await page.click("button[type=submit]");
    await page.waitForSelector(".error");
    await page.fill("#user", "alice");
    await page.fill("#password", "pw-alice");
    await page.press("#password", "Enter");
    await page.waitForSelector(".chip");
    // Keyboard: focus the first folder, arrow to `loras`.
    const names = await page.$$eval(".chip", (cs) => cs.map((c) => `${c.dataset.inbox}/${c.dataset.folder}`));
    const want = names.indexOf("models-inbox/loras");
    if (want < 0) throw new Error(`no loras chip in ${names}`);
    await page.focus(".chip");
    for (let i = 0; i < want; i++) await page.keyboard.press("ArrowRight");
    await page.keyboard.press("Space");
    const chosen = await page.$eval(".chip[aria-checked=true]", (c) => `${c.dataset.inbox}/${c.dataset.folder}`);
    if (chosen !== "models-inbox/loras") throw new Error(`keyboard chose ${chosen}`);
    // Slow the upload down (1 MB/s) to see progress, speed and ETA, and to pause and resume.
    const cdp = await page.context().newCDPSession(page);
    await cdp.send("Network.enable");
    await cdp.send("Network.emulateNetworkConditions", { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: 1000000 });
    await page.setInputFiles("#file", [f1, f2]);
    await page.waitForFunction(() => [...document.querySelectorAll(".item .stats")].some((s) => s.textContent.includes("ETA")));
    await page.screenshot({ path: `${art}/uploading.png`, fullPage: true });
    const first = page.locator(".item").first();
    await first.getByRole("button", { name: /^Pause/ }).focus();
    await page.keyboard.press("Enter");
    await page.waitForFunction(() => document.querySelector(".item.paused") !== null);
    const pausedAt = await first.locator(".stats").textContent();
    await first.getByRole("button", { name: /^Resume/ }).click();
    await cdp.send("Network.emulateNetworkConditions", { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
    console.log(`paused at: ${pausedAt}`);
    await page.waitForSelector(".item.accepted", { timeout: 90000 });
    await page.waitForSelector(".item.refused", { timeout: 90000 });
    const accepted = await page.$eval(".item.accepted .decision", (d) => d.textContent);
    const refused = await page.$eval(".item.refused .decision", (d) => d.textContent);
    await page.screenshot({ path: `${art}/page.png`, fullPage: true });
    if (!/Accepted · sha256 [0-9a-f]{64} · short hash [0-9a-f]{10}/.test(accepted)) throw new Error(`accepted text: ${accepted}`);
    // The daemon's .why.txt for a file cut short.
    if (!refused.includes("truncated")) throw new Error(`refused text: ${refused}`);
    // Interrupt: a third file, slowed down, while the service is killed and restarted.
    await cdp.send("Network.emulateNetworkConditions", { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: 500000 });
    await page.setInputFiles("#file", [f3]);
    const third = page.locator(".item", { hasText: "page-three" });
    await until("page-three to be partly uploaded", async () => /\((\d+)%\)/.test(await third.locator(".stats").textContent()) && !(await third.locator(".stats").textContent()).includes("(0%)"), 60);
    console.log(`restart at: ${await third.locator(".stats").textContent()}`);
    fs.writeFileSync(`${control}/restart-now`, "");
    await until("the restart", () => fs.existsSync(`${control}/restarted`), 60);
    await cdp.send("Network.emulateNetworkConditions", { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
    await third.locator(".state", { hasText: "Accepted" }).waitFor({ timeout: 90000 });
    await page.screenshot({ path: `${art}/resumed.png`, fullPage: true });
    // The restart shows up as failed requests while the service was down; nothing else may.
    const real = errors.filter((e) => !/ERR_CONNECTION_(REFUSED|RESET)|ERR_EMPTY_RESPONSE/.test(e));
    if (real.length) throw new Error(`page errors: ${real.join("; ")}`);
    console.log("ok");
  } finally {
    await browser.close();
  }
})().catch((e) => {
  console.error(String(e && e.stack || e));
  process.exit(1);
});
