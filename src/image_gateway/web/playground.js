// The playground: one page, no build step. Talks only to the gateway that served it (relative URLs;
// the page's CSP says connect-src 'self'). The gateway key lives in this tab's sessionStorage.

const KEY_ITEM = "image-gateway-key";
const PARTIALS = 2; // partial images asked for while the image streams
const $ = (id) => document.getElementById(id);

const state = { objectUrls: [] };

function headers(extra = {}) {
  const key = sessionStorage.getItem(KEY_ITEM);
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

function setStatus(text) { $("status").textContent = text; }

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = !text;
}

function setProgress(percent) {
  const bar = $("progress");
  if (percent === null) { bar.hidden = true; return; }
  bar.hidden = false;
  bar.value = Math.max(bar.value, Math.min(100, percent));
}

// An OpenAI-shaped error body → words a person can read.
function describeError(status, body) {
  const err = body && body.error;
  if (err && err.message) {
    const what = err.code ? `${err.code}, HTTP ${status}` : `HTTP ${status}`;
    return `${err.message} (${what})`;
  }
  return `The gateway answered HTTP ${status}.`;
}

async function errorOf(resp) {
  let body = null;
  try { body = await resp.json(); } catch { /* not JSON */ }
  if (resp.status === 401) {
    const hint = sessionStorage.getItem(KEY_ITEM) ? "Check the gateway key above." : "Enter a gateway key above.";
    return `${describeError(resp.status, body)} ${hint}`;
  }
  return describeError(resp.status, body);
}

async function loadModels() {
  const select = $("model");
  const previous = select.value;
  try {
    const resp = await fetch("/v1/models", { headers: headers() });
    if (!resp.ok) { showError(await errorOf(resp)); return; }
    const { data } = await resp.json();
    select.replaceChildren(...data.map((m) => new Option(`${m.id} (${m.owned_by})`, m.id)));
    const want = data.some((m) => m.id === previous) ? previous : data.some((m) => m.id === "demo") ? "demo" : "";
    if (want) select.value = want;
    showError("");
  } catch (e) {
    showError(`Could not reach the gateway: ${e.message}`);
  }
}

function b64ToBlob(b64, format) {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return new Blob([bytes], { type: `image/${format === "jpg" ? "jpeg" : format}` });
}

function clearOutput() {
  state.objectUrls.forEach((u) => URL.revokeObjectURL(u));
  state.objectUrls = [];
  $("partial").replaceChildren();
  $("results").replaceChildren();
  $("progress").value = 0;
  showError("");
}

function showPartial(ev) {
  const img = document.createElement("img");
  img.alt = `Partial image ${ev.partial_image_index + 1}`;
  img.className = "partial";
  img.src = `data:image/png;base64,${ev.b64_json}`;
  $("partial").replaceChildren(img);
  const percent = typeof ev.progress === "number" ? ev.progress : ((ev.partial_image_index + 1) * 100) / (PARTIALS + 1);
  setProgress(percent);
  setStatus(`Partial image ${ev.partial_image_index + 1} received…`);
}

function showResult(blob, index, format) {
  const url = URL.createObjectURL(blob);
  state.objectUrls.push(url);
  const fig = document.createElement("figure");
  const img = document.createElement("img");
  img.src = url;
  img.alt = `Result ${index + 1}`;
  img.className = "result";
  const link = document.createElement("a");
  link.href = url;
  link.download = `image-${index + 1}.${format}`;
  link.textContent = `Download image ${index + 1}`;
  fig.append(img, link);
  $("results").append(fig);
}

// Server-sent events from a fetch body: yields {event, data} and progress comments as {comment}.
async function* sse(resp) {
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) yield { comment: line.slice(1).trim() };
        else if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
      }
      if (data.length) yield { event, data: data.join("\n") };
    }
  }
}

function request(form) {
  const file = $("image").files[0];
  const fields = { model: form.model.value, prompt: form.prompt.value, n: Number(form.n.value) || 1,
                   stream: true, partial_images: PARTIALS };
  if (form.size.value !== "auto") fields.size = form.size.value;
  if (!file) {
    return fetch("/v1/images/generations", {
      method: "POST", headers: headers({ "Content-Type": "application/json" }), body: JSON.stringify(fields) });
  }
  const body = new FormData();
  for (const [k, v] of Object.entries(fields)) body.append(k, String(v));
  body.append("image", file, file.name);
  return fetch("/v1/images/edits", { method: "POST", headers: headers(), body });
}

async function generate(event) {
  event.preventDefault();
  const form = $("form");
  if (!form.prompt.value.trim()) { showError("Write a prompt first."); return; }
  clearOutput();
  $("generate").disabled = true;
  setStatus("Generating…");
  setProgress(1);
  let count = 0;
  try {
    const resp = await request(form);
    if (!resp.ok) throw new Error(await errorOf(resp));
    for await (const msg of sse(resp)) {
      if (msg.comment) {
        const m = /^progress (\d+)%$/.exec(msg.comment);
        if (m) { setProgress(Number(m[1])); setStatus(`Generating… ${m[1]}%`); }
        continue;
      }
      if (msg.data === "[DONE]") break;
      const ev = JSON.parse(msg.data);
      if (ev.error) throw new Error(describeError("stream", ev));
      if (ev.type && ev.type.endsWith(".partial_image")) showPartial(ev);
      else if (ev.type && ev.type.endsWith(".completed")) {
        const format = ev.output_format || "png";
        showResult(b64ToBlob(ev.b64_json, format), count++, format);
        setStatus(`Received ${count} image${count === 1 ? "" : "s"}…`);
      }
    }
    if (!count) throw new Error("The stream ended without an image.");
    $("partial").replaceChildren();
    setProgress(100);
    setStatus(`Done: ${count} image${count === 1 ? "" : "s"}.`);
  } catch (e) {
    setProgress(null);
    setStatus("Failed.");
    showError(e instanceof TypeError ? `Could not reach the gateway: ${e.message}` : e.message);
  } finally {
    $("generate").disabled = false;
  }
}

function init() {
  const key = sessionStorage.getItem(KEY_ITEM);
  if (key) $("key").value = key;
  $("key").addEventListener("change", () => {
    const value = $("key").value.trim();
    if (value) sessionStorage.setItem(KEY_ITEM, value);
    else sessionStorage.removeItem(KEY_ITEM);
    loadModels();
  });
  $("reload-models").addEventListener("click", loadModels);
  $("form").addEventListener("submit", generate);
  loadModels();
}

init();
