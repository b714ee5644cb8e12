// linkfarm uploads: a small tus 1.0.0 client and the page around it. Plain JS, no build step.
// Uploads resume at the server's offset after a dropped connection, a pause, a restarted service
// or a reloaded page (the upload URL is remembered per file in localStorage).
"use strict";

const CHUNK_MAX = 16 * 1024 * 1024;
const PARALLEL = 2;
const RETRY_DELAYS = [1, 2, 4, 8, 15, 30]; // seconds; the last one repeats until it works
// No byte of a chunk acknowledged for this long: the connection is taken for dead and the upload
// resumes on a new one. A pulled cable or a lost Wi-Fi drops packets silently, and TCP alone
// would wait many minutes before it reports an error. (The server's fsync of a chunk at the end
// takes seconds at most, well within it.)
const STALL_S = 30;
const $ = (id) => document.getElementById(id);

let session = null;
let folder = null; // { inbox, folder }
const uploads = [];

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function fmtBytes(n) {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(n < 10 ? 2 : 1)) + " " + u[i];
}

function fmtTime(s) {
  if (!isFinite(s) || s < 0) return "–";
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return h ? `${h}h ${m}m` : m ? `${m}m ${sec}s` : `${sec}s`;
}

function b64(s) {
  return btoa(String.fromCharCode(...new TextEncoder().encode(s)));
}

function headers(extra) {
  return Object.assign({ "Tus-Resumable": "1.0.0", "X-CSRF-Token": session.csrf }, extra || {});
}

class Upload {
  constructor(file, target) {
    this.file = file;
    this.target = target;
    this.url = null;
    this.offset = 0;
    this.state = "queued"; // queued uploading paused retrying done failed
    this.xhr = null;
    this.attempt = 0;
    this.speed = 0;
    this.lastTick = null;
    this.key = `linkfarm-upload:${target.inbox}/${target.folder}/${file.name}/${file.size}/${file.lastModified}`;
    this.render();
  }

  render() {
    const li = el("li", "item");
    const top = el("div", "row");
    this.nameEl = el("span", "name", this.file.name);
    top.append(this.nameEl, el("span", "tag", this.target.folder), el("span", "tag", fmtBytes(this.file.size)));
    const actions = el("div", "actions");
    this.pauseBtn = el("button", "", "Pause");
    this.pauseBtn.type = "button";
    this.pauseBtn.setAttribute("aria-label", `Pause ${this.file.name}`);
    this.pauseBtn.onclick = () => (this.state === "paused" ? this.resume() : this.pause());
    this.cancelBtn = el("button", "", "Cancel");
    this.cancelBtn.type = "button";
    this.cancelBtn.setAttribute("aria-label", `Cancel ${this.file.name}`);
    this.cancelBtn.onclick = () => this.cancel();
    actions.append(this.pauseBtn, this.cancelBtn);
    top.append(actions);
    const bar = el("div", "bar");
    bar.setAttribute("role", "progressbar");
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", "100");
    bar.setAttribute("aria-label", `Progress of ${this.file.name}`);
    this.barEl = bar;
    this.fill = el("span");
    bar.append(this.fill);
    const stats = el("div", "stats");
    this.stateEl = el("span", "state", "Queued");
    this.pctEl = el("span");
    this.speedEl = el("span");
    this.etaEl = el("span");
    stats.append(this.stateEl, this.pctEl, this.speedEl, this.etaEl);
    this.decisionEl = el("div");
    li.append(top, bar, stats, this.decisionEl);
    this.li = li;
    $("list").prepend(li);
    $("empty").hidden = true;
    this.update();
  }

  update(text) {
    const pct = this.file.size ? (this.offset / this.file.size) * 100 : 100;
    this.fill.style.width = pct.toFixed(1) + "%";
    this.barEl.setAttribute("aria-valuenow", pct.toFixed(0));
    this.pctEl.textContent = `${fmtBytes(this.offset)} of ${fmtBytes(this.file.size)} (${pct.toFixed(0)}%)`;
    const moving = this.state === "uploading" && this.speed > 0;
    this.speedEl.textContent = moving ? `${fmtBytes(this.speed)}/s` : "";
    this.etaEl.textContent = moving ? `ETA ${fmtTime((this.file.size - this.offset) / this.speed)}` : "";
    if (text) this.stateEl.textContent = text;
    this.li.className = "item " + this.state;
    const active = ["queued", "uploading", "paused", "retrying"].includes(this.state);
    this.pauseBtn.parentElement.hidden = !active;
    this.pauseBtn.textContent = this.state === "paused" ? "Resume" : "Pause";
    this.pauseBtn.setAttribute("aria-label", `${this.pauseBtn.textContent} ${this.file.name}`);
    summary();
  }

  async start() {
    this.state = "uploading";
    // After a failure the reason stays in view until the upload moves again (a HEAD can hang
    // for a while on a dead connection).
    this.update(this.attempt ? `Reconnecting… (${this.why})` : "Starting…");
    try {
      if (!this.url) this.url = localStorage.getItem(this.key);
      if (this.url) {
        const h = await fetch(this.url, { method: "HEAD", headers: headers(), credentials: "same-origin", signal: AbortSignal.timeout(STALL_S * 1000) });
        if (h.ok) this.offset = parseInt(h.headers.get("Upload-Offset"), 10) || 0;
        else { this.url = null; localStorage.removeItem(this.key); }
      }
      if (!this.url) await this.create();
      await this.send();
    } catch (e) {
      this.onError(e);
    }
  }

  async create() {
    const meta = [["filename", this.file.name], ["folder", this.target.folder], ["inbox", this.target.inbox]]
      .map(([k, v]) => `${k} ${b64(v)}`).join(",");
    const r = await fetch("/files/", {
      method: "POST", credentials: "same-origin", signal: AbortSignal.timeout(STALL_S * 1000),
      headers: headers({ "Upload-Length": String(this.file.size), "Upload-Metadata": meta }),
    });
    if (r.status !== 201) throw { status: r.status, text: await r.text() };
    this.url = new URL(r.headers.get("Location"), location.href).pathname;
    localStorage.setItem(this.key, this.url);
    this.offset = 0;
  }

  send() {
    return new Promise((resolve, reject) => {
      if (this.state !== "uploading") return resolve();
      if (this.offset >= this.file.size && this.file.size > 0) return resolve(this.finished());
      const chunk = Math.min(CHUNK_MAX, session.max_chunk);
      const end = Math.min(this.offset + chunk, this.file.size);
      const xhr = new XMLHttpRequest();
      this.xhr = xhr;
      xhr.open("PATCH", this.url);
      for (const [k, v] of Object.entries(headers({ "Upload-Offset": String(this.offset), "Content-Type": "application/offset+octet-stream" }))) {
        xhr.setRequestHeader(k, v);
      }
      const base = this.offset;
      let heard = performance.now();
      let stalled = false;
      const watchdog = setInterval(() => {
        if (performance.now() - heard > STALL_S * 1000) { stalled = true; xhr.abort(); }
      }, 1000);
      xhr.onloadend = () => clearInterval(watchdog);
      xhr.upload.onprogress = (ev) => { heard = performance.now(); this.tick(base + ev.loaded); };
      xhr.onload = () => {
        this.xhr = null;
        if (xhr.status === 204) {
          this.attempt = 0;
          this.offset = parseInt(xhr.getResponseHeader("Upload-Offset"), 10);
          this.update("Uploading");
          if (this.offset >= this.file.size) return resolve(this.finished());
          return resolve(this.send());
        }
        reject({ status: xhr.status, text: xhr.responseText });
      };
      xhr.onerror = () => { this.xhr = null; reject({ status: 0, text: "network error" }); };
      // Aborted by a pause or a cancel (nothing more to do), or by the watchdog (try again).
      xhr.onabort = () => {
        this.xhr = null;
        if (stalled) reject({ status: 0, stalled: true, text: `no progress for ${STALL_S} s` });
        else resolve();
      };
      xhr.send(this.file.slice(this.offset, end));
      this.update("Uploading");
    });
  }

  tick(bytes) {
    const now = performance.now();
    if (this.lastTick) {
      const dt = (now - this.lastTick.t) / 1000;
      if (dt > 0.2) {
        const rate = (bytes - this.lastTick.b) / dt;
        this.speed = this.speed ? this.speed * 0.7 + rate * 0.3 : rate;
        this.lastTick = { t: now, b: bytes };
      }
    } else {
      this.lastTick = { t: now, b: bytes };
    }
    this.offset = Math.max(this.offset, Math.min(bytes, this.file.size));
    this.update();
  }

  onError(e) {
    const status = e && e.status !== undefined ? e.status : 0;
    const text = (e && e.text ? String(e.text) : String(e)).trim();
    // Network errors, restarts, a full disk and a lost offset are worth another try; anything
    // else is the server's final word about this file.
    const retry = status === 0 || status === 409 || status === 423 || status === 429 || status === 460 || status >= 500;
    if (this.state === "paused" || this.state === "cancelled") return;
    if (status === 401) { this.fail("Signed out: sign in again, the upload resumes where it stopped"); return; }
    if (!retry) {
      if (status === 404) localStorage.removeItem(this.key);
      this.fail(text || `refused (${status})`);
      return;
    }
    const delay = RETRY_DELAYS[Math.min(this.attempt, RETRY_DELAYS.length - 1)];
    this.attempt++;
    this.state = "retrying";
    this.speed = 0;
    this.lastTick = null;
    const lost = e && e.stalled ? text : e && e.name === "TimeoutError" ? `no answer for ${STALL_S} s` : "connection lost";
    const why = status === 507 ? "disk full" : status === 429 ? "too many uploads" : status === 0 ? lost : `server said ${status}`;
    this.why = why;
    this.update(`Retrying in ${delay}s (${why})`);
    this.timer = setTimeout(() => { if (this.state === "retrying") this.start(); }, delay * 1000);
  }

  fail(text) {
    this.state = "failed";
    this.update("Refused");
    this.decision("bad", text);
    pump();
  }

  pause() {
    if (this.state === "queued") { this.state = "paused"; this.update("Paused"); return; }
    this.state = "paused";
    clearTimeout(this.timer);
    if (this.xhr) this.xhr.abort();
    this.speed = 0;
    this.lastTick = null;
    this.update("Paused");
    pump();
  }

  resume() {
    this.state = "queued";
    this.update("Queued");
    pump();
  }

  async cancel() {
    const was = this.state;
    this.state = "cancelled";
    clearTimeout(this.timer);
    if (this.xhr) this.xhr.abort();
    if (this.url && was !== "done") {
      await fetch(this.url, { method: "DELETE", headers: headers(), credentials: "same-origin" }).catch(() => {});
    }
    localStorage.removeItem(this.key);
    this.li.remove();
    uploads.splice(uploads.indexOf(this), 1);
    if (!uploads.length) $("empty").hidden = false;
    summary();
    pump();
  }

  async finished() {
    this.state = "done";
    this.speed = 0;
    localStorage.removeItem(this.key);
    this.update("Checking…");
    pump();
    const id = this.url.split("/").pop();
    for (let i = 0; ; i++) {
      let s = null;
      try {
        const r = await fetch(`/api/uploads/${id}`, { credentials: "same-origin" });
        if (r.ok) s = await r.json();
      } catch (_) { /* the service restarts: ask again */ }
      if (s && s.state === "accepted") {
        this.state = "accepted";
        this.update("Accepted");
        const d = this.decision("ok", "");
        d.append("Accepted · sha256 ", el("code", "", s.sha256 || "?"), " · short hash ", el("code", "", (s.sha256 || "").slice(0, 10)));
        return;
      }
      if (s && (s.state === "refused" || s.state === "expired")) {
        this.state = "refused";
        this.update(s.state === "expired" ? "Expired" : `Refused (${s.reason || "?"})`);
        const d = this.decision("bad", s.state === "expired" ? "The upload expired before it was finished." : "");
        if (s.why) d.append(el("pre", "", s.why));
        return;
      }
      this.update(s && s.state === "pending" ? "Waiting for the inbox's checks…" : "Checking…");
      await new Promise((r) => setTimeout(r, Math.min(1000 + i * 250, 5000)));
    }
  }

  decision(kind, text) {
    this.decisionEl.className = "decision " + kind;
    this.decisionEl.textContent = text;
    return this.decisionEl;
  }
}

function pump() {
  const running = uploads.filter((u) => u.state === "uploading" || u.state === "retrying").length;
  let free = PARALLEL - running;
  for (const u of uploads.slice().reverse()) {
    if (free <= 0) break;
    if (u.state === "queued") { free--; u.start(); }
  }
}

function summary() {
  const n = (st) => uploads.filter((u) => st.includes(u.state)).length;
  const parts = [];
  if (n(["uploading", "retrying", "queued", "paused"])) parts.push(`${n(["uploading", "retrying", "queued", "paused"])} in progress`);
  if (n(["accepted"])) parts.push(`${n(["accepted"])} accepted`);
  if (n(["refused", "failed"])) parts.push(`${n(["refused", "failed"])} refused`);
  $("summary").textContent = parts.join(" · ");
}

function addFiles(list) {
  if (!folder) { alert("Choose the model type first."); return; }
  for (const f of list) {
    const u = new Upload(f, folder);
    uploads.push(u);
  }
  pump();
}

function chooseFolder(btn, target) {
  for (const b of document.querySelectorAll(".chip")) {
    b.setAttribute("aria-checked", "false");
    b.tabIndex = -1;
  }
  btn.setAttribute("aria-checked", "true");
  btn.tabIndex = 0;
  folder = target;
  $("drop").classList.remove("disabled");
  $("drop").setAttribute("aria-label", `Choose files to upload into ${target.folder}`);
}

async function init() {
  const r = await fetch("/api/session", { credentials: "same-origin" });
  if (!r.ok) { location.href = "/"; return; }
  session = await r.json();
  $("user").textContent = session.user;
  const box = $("folders");
  const many = session.inboxes.length > 1;
  const accept = new Set();
  let max = 0;
  for (const ib of session.inboxes) {
    ib.accept.forEach((a) => accept.add(a));
    max = Math.max(max, ib.max_size);
    for (const f of ib.folders) {
      const b = el("button", "chip", f);
      b.type = "button";
      b.setAttribute("role", "radio");
      b.setAttribute("aria-checked", "false");
      b.tabIndex = -1;
      b.dataset.inbox = ib.name;
      b.dataset.folder = f;
      if (many) b.append(el("small", "", ib.name));
      b.onclick = () => chooseFolder(b, { inbox: ib.name, folder: f });
      box.append(b);
    }
  }
  const chips = [...box.querySelectorAll(".chip")];
  if (chips.length) chips[0].tabIndex = 0;
  box.addEventListener("keydown", (ev) => {
    const i = chips.indexOf(document.activeElement);
    if (i < 0) return;
    const step = ev.key === "ArrowRight" || ev.key === "ArrowDown" ? 1 : ev.key === "ArrowLeft" || ev.key === "ArrowUp" ? -1 : 0;
    if (!step) return;
    ev.preventDefault();
    const next = chips[(i + step + chips.length) % chips.length];
    next.focus();
    next.click();
  });
  $("accept").textContent = [...accept].map((a) => (a === "pickle" ? ".ckpt/.pt/.pth/.bin" : "." + a)).join(", ");
  $("maxsize").textContent = fmtBytes(max);
  $("file").accept = [...accept].flatMap((a) => (a === "pickle" ? [".ckpt", ".pt", ".pth", ".bin"] : ["." + a])).join(",");
  const drop = $("drop");
  drop.classList.add("disabled");
  drop.onclick = () => { if (folder) $("file").click(); else alert("Choose the model type first."); };
  drop.onkeydown = (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); drop.click(); } };
  drop.ondragover = (ev) => { ev.preventDefault(); drop.classList.add("over"); };
  drop.ondragleave = () => drop.classList.remove("over");
  drop.ondrop = (ev) => { ev.preventDefault(); drop.classList.remove("over"); addFiles(ev.dataTransfer.files); };
  $("file").onchange = (ev) => { addFiles(ev.target.files); ev.target.value = ""; };
  $("logout").onclick = async () => {
    await fetch("/logout", { method: "POST", headers: { "X-CSRF-Token": session.csrf }, credentials: "same-origin" });
    location.href = "/";
  };
  window.addEventListener("online", () => uploads.filter((u) => u.state === "retrying").forEach((u) => { clearTimeout(u.timer); u.start(); }));
  window.addEventListener("beforeunload", (ev) => { if (uploads.some((u) => u.state === "uploading")) ev.preventDefault(); });
}

init();
