// The upload page in headless Chromium (playwright-core, Debian's /usr/bin/chromium): a wrong
// password is refused, the right one logs in, `loras` is chosen with the keyboard, two files go
// in through the file input, and the page shows one accepted (with its sha256 and short hash)
// and one refused (with the .why.txt text). Screenshots: login.png, page.png.
// Usage: node page.js URL FILE1 FILE2 ARTIFACT_DIR
"use strict";
const { chromium } = require("playwright-core");

const [url, f1, f2, art] = process.argv.slice(2);

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
    if (!refused.includes("cut short")) throw new Error(`refused text: ${refused}`);
    if (errors.length) throw new Error(`page errors: ${errors.join("; ")}`);
    console.log("ok");
  } finally {
    await browser.close();
  }
})().catch((e) => {
  console.error(String(e && e.stack || e));
  process.exit(1);
});
