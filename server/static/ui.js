/* AnySR Serve try-it page. A client of the public API only: POST /upscale, GET /v1/model, GET /metrics.
   Scales, widths, formats and limits all come from GET /v1/model; nothing about the server is assumed here. */
"use strict";

const $ = (id) => document.getElementById(id);
const REASONS = {
  forced: "the width you forced", budget: "the widest width within your GFLOPs cap",
  deadline: "the widest width predicted to meet your deadline", fixed: "the server runs one fixed width",
  scale_group: "the width of this scale's group", idle: "the server is idle: full width",
  cpu_busy: "the CPU is busy", gpu_busy: "the GPU is busy", queue_busy: "work is queued",
  queue_overloaded: "overloaded: the narrowest width", gpu_memory_low: "GPU memory is low",
};
const LOAD_LEVELS = ["idle", "moderate", "heavy", "overloaded"];
const PALETTE = ["#7c3aed", "#0891b2", "#d97706", "#2563eb", "#db2777", "#16a34a"];
const TIMING = ["queue", "decode", "compute", "encode"];
const LOSSY = ["jpeg", "webp"];
const CROP = 128; // output pixels per side of the 1:1 crop
const MIX_WINDOW_MS = 60000;

const state = {
  model: null, file: null, input: null, inputUrl: null, afterUrl: null,
  crop: { x: 0.5, y: 0.5 }, // centre of the 1:1 crop, as fractions of the output
  busy: false, mix: [], compared: [],
};

const widthLabel = (width) => Number(width).toFixed(1); // as the server labels widths
const count = (n) => n.toLocaleString("en-US");
const gflops = (flops) => `${(flops / 1e9).toLocaleString("en-US", { maximumFractionDigits: 3 })} GFLOPs`;
const ms = (value) => `${value < 10 ? value.toFixed(1) : Math.round(value)} ms`;
const megapixels = (pixels) => `${(pixels / 1e6).toFixed(1)} MP`;
const mebibytes = (n) => `${(n / 2 ** 20).toFixed(0)} MiB`;
const clamp = (value, low, high) => Math.max(low, Math.min(high, value));
const colour = (label) => {
  const index = state.model ? state.model.widths.map(widthLabel).indexOf(label) : -1;
  return index < 0 ? "#6b7280" : PALETTE[index % PALETTE.length];
};
const authHeader = () => (state.model && state.model.auth && state.model.auth.header) || "X-API-Key";

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

/** fetch() that adds the API key when one is typed, and turns an error answer into an ApiError with the API's message. */
async function api(path, options = {}) {
  const headers = new Headers(options.headers);
  if ($("api-key").value) headers.set(authHeader(), $("api-key").value);
  const response = await fetch(path, { ...options, headers });
  if (response.ok) return response;
  let code = `http_${response.status}`, message = response.statusText || "request failed";
  try { ({ code, message } = (await response.json()).error); } catch { /* not the API's JSON shape */ }
  if (response.status === 401 || response.status === 403) $("key-field").hidden = false;
  throw new ApiError(response.status, code, message);
}

function showError(error) {
  $("empty").hidden = true;
  $("error-code").textContent = error.status ? `${error.status} ${error.code}:` : "Error:";
  $("error-message").textContent = error.message;
  $("error").hidden = false;
}

function setBusy(text) {
  state.busy = Boolean(text);
  $("busy").textContent = text;
  $("result-title").parentElement.setAttribute("aria-busy", String(state.busy));
  const ready = state.model && state.file && !state.busy;
  $("go").disabled = !ready;
  $("compare").disabled = !ready;
}

async function loadModel() {
  try {
    const model = (state.model = await (await api("/v1/model")).json());
    const limits = model.limits;
    $("model-line").textContent = `${model.name} · ${model.device}, ${model.precision} · widths ` +
      `${model.served_widths.map(widthLabel).join(" / ")} · policy ${model.policy.mode}`;
    if (model.untrained) { $("untrained").textContent = model.warning; $("untrained").hidden = false; }
    const min = Math.floor(model.scale_range.min_exclusive * 10 + 1) / 10; // first 0.1 step above the exclusive minimum
    for (const id of ["scale-range", "scale", "scale-h", "scale-w"]) { $(id).min = min; $(id).max = model.scale_range.max; }
    $("budget-width").replaceChildren(...model.served_widths.map((w) => new Option(widthLabel(w), widthLabel(w))));
    $("format").replaceChildren(...limits.output_formats.map((f) => new Option(f.toUpperCase(), f)));
    $("quality").value = limits.default_quality;
    $("file").accept = limits.input_formats.map((f) => `image/${f}`).join(",");
    $("file-info").textContent = `${limits.input_formats.map((f) => f.toUpperCase()).join(", ")}, up to ${megapixels(limits.max_input_pixels)}`;
    $("limits").textContent = `Server limits: input ${megapixels(limits.max_input_pixels)} and ${mebibytes(limits.max_body_bytes)}, ` +
      `output ${megapixels(limits.max_output_pixels)}, scale above ×${model.scale_range.min_exclusive} up to ` +
      `×${model.scale_range.max}, ${limits.request_timeout_s} s per request.`;
    if (model.auth && model.auth.required) $("key-field").hidden = false;
    $("format").dispatchEvent(new Event("change"));
  } catch (error) {
    $("model-line").textContent = "Could not read /v1/model.";
    showError(error);
  }
  setBusy("");
}

function scales() {
  if ($("per-axis").checked) return { scale_h: $("scale-h").value, scale_w: $("scale-w").value };
  return { scale: $("scale").value };
}

function scaleText() {
  const s = scales();
  return s.scale ? `×${s.scale}` : `×${s.scale_h} by ×${s.scale_w}`;
}

/** FLOPs per width for an input size and the current scales, from /v1/model (the server's own FLOPs model). */
async function flopsTable(input) {
  const query = new URLSearchParams({ size: `${input.h}x${input.w}`, ...scales() });
  return (await (await api(`/v1/model?${query}`)).json()).flops;
}

let costTimer = 0;
function refreshCosts() {
  $("scale-out").textContent = scaleText();
  clearTimeout(costTimer);
  costTimer = setTimeout(async () => {
    if (!state.input || !state.model) return;
    try {
      const table = await flopsTable(state.input);
      for (const option of $("budget-width").options) {
        option.textContent = `${option.value} · ${gflops(table.per_width[option.value].flops)}`;
      }
      $("width-costs").textContent = `This image: ${table.output_size[1]}×${table.output_size[0]} px out, ` +
        `${table.tiles} tile${table.tiles > 1 ? "s" : ""}; each width's cost is in the list.`;
    } catch (error) { $("width-costs").textContent = error.message; }
  }, 250);
}

function setFile(file) {
  if (!file) return;
  state.file = file;
  state.input = null;
  if (state.inputUrl) URL.revokeObjectURL(state.inputUrl);
  state.inputUrl = URL.createObjectURL(file);
  $("file-info").textContent = `${file.name} · ${count(file.size)} bytes`;
  const image = new Image();
  image.onload = () => {
    $("preview").src = state.inputUrl;
    $("preview").hidden = false;
    state.input = { w: image.naturalWidth, h: image.naturalHeight };
    $("file-info").textContent += ` · ${image.naturalWidth}×${image.naturalHeight} px`;
    refreshCosts();
  };
  image.onerror = () => { $("preview").hidden = true; $("file-info").textContent += " · no preview; the server will check it"; };
  image.src = state.inputUrl;
  setBusy("");
}

function budgetHeader(forcedWidth) {
  if (forcedWidth !== undefined) return `width=${widthLabel(forcedWidth)}`;
  const mode = document.querySelector("input[name=budget]:checked").value;
  if (mode === "width") return `width=${$("budget-width").value}`;
  if (mode === "gflops") return `gflops=${$("budget-gflops").value}`;
  return null;
}

function parseServerTiming(header) {
  const timing = {};
  for (const part of (header || "").split(",")) {
    const [name, ...params] = part.trim().split(";");
    const duration = params.map((p) => p.trim()).find((p) => p.startsWith("dur="));
    if (name) timing[name] = duration ? Number(duration.slice(4)) : 0;
  }
  return timing;
}

/** One POST /upscale with the form's settings (or a forced width); the answer's image and X-AnySR-* facts. */
async function upscale(forcedWidth) {
  const form = new FormData();
  form.append("image", state.file, state.file.name);
  const format = $("format").value;
  const query = new URLSearchParams({ ...scales(), format });
  if (LOSSY.includes(format) && $("quality").value) query.set("quality", $("quality").value);
  const headers = {};
  const budget = budgetHeader(forcedWidth);
  if (budget) headers["X-AnySR-Budget"] = budget;
  if ($("deadline").value) headers["X-AnySR-Deadline-Ms"] = $("deadline").value;
  const started = performance.now();
  const response = await api(`/upscale?${query}`, { method: "POST", body: form, headers });
  const blob = await response.blob();
  const h = response.headers;
  return {
    blob, format, width: h.get("X-AnySR-Width"), flops: Number(h.get("X-AnySR-FLOPs")), reason: h.get("X-AnySR-Reason"),
    tiles: Number(h.get("X-AnySR-Tiles")), timing: parseServerTiming(h.get("Server-Timing")), roundTripMs: performance.now() - started,
  };
}

function legendItem(text, swatch) {
  const item = document.createElement("li");
  item.textContent = text;
  item.style.setProperty("--swatch", swatch);
  return item;
}

function segment(fraction, background) {
  const span = document.createElement("span");
  span.style.width = `${100 * fraction}%`;
  span.style.background = background;
  return span;
}

function drawTiming(result) {
  const t = result.timing;
  const total = t.total || TIMING.reduce((sum, name) => sum + (t[name] || 0), 0);
  const other = Math.max(0, total - TIMING.reduce((sum, name) => sum + (t[name] || 0), 0));
  $("timing-bar").replaceChildren(...TIMING.map((name) => segment((t[name] || 0) / total, `var(--${name})`)));
  const items = TIMING.map((name) => legendItem(`${name} ${ms(t[name] || 0)}`, `var(--${name})`));
  items.push(legendItem(`other ${ms(other)}`, "var(--other)"));
  $("timing-legend").replaceChildren(...items);
  $("timing-bar").setAttribute("aria-label", `Server-Timing: ${items.map((item) => item.textContent).join(", ")}`);
  $("r-total").textContent = `· ${ms(total)} in the server, ${ms(result.roundTripMs)} round trip`;
}

/** The crop rectangle in output pixels, around state.crop (fractions of the output). */
function cropRect(width, height) {
  const size = Math.min(CROP, width, height);
  return {
    x: clamp(Math.round(state.crop.x * width - size / 2), 0, width - size),
    y: clamp(Math.round(state.crop.y * height - size / 2), 0, height - size), size,
  };
}

function drawCrop(canvas, source, rect, scaleX, scaleY, smooth) {
  canvas.width = canvas.height = rect.size;
  const context = canvas.getContext("2d");
  context.imageSmoothingEnabled = smooth;
  context.imageSmoothingQuality = "high";
  context.drawImage(source, rect.x * scaleX, rect.y * scaleY, rect.size * scaleX, rect.size * scaleY, 0, 0, rect.size, rect.size);
}

function drawCrops() {
  for (const { canvas, bitmap } of state.compared) drawCrop(canvas, bitmap, cropRect(bitmap.width, bitmap.height), 1, 1, false);
  const after = $("after-img"), before = $("before-img");
  const W = after.naturalWidth, H = after.naturalHeight;
  if (!W || !before.naturalWidth) return;
  const rect = cropRect(W, H);
  drawCrop($("crop-after"), after, rect, 1, 1, false);
  drawCrop($("crop-before"), before, rect, before.naturalWidth / W, before.naturalHeight / H, true);
  const box = $("crop-box").style;
  [box.left, box.top, box.width, box.height] = [rect.x / W, rect.y / H, rect.size / W, rect.size / H].map((f) => `${100 * f}%`);
}

function setSplit() {
  const value = $("split").value;
  $("after-img").style.clipPath = `inset(0 0 0 ${value}%)`;
  $("divider").style.left = `${value}%`;
}

async function showResult(result) {
  if (state.afterUrl) URL.revokeObjectURL(state.afterUrl);
  state.afterUrl = URL.createObjectURL(result.blob);
  const after = $("after-img"), before = $("before-img");
  after.src = state.afterUrl;
  before.src = state.inputUrl;
  await Promise.all([after.decode(), before.decode()]);
  const W = after.naturalWidth, H = after.naturalHeight;
  $("viewer").style.aspectRatio = `${W} / ${H}`;
  $("viewer").style.width = `min(100%, ${(70 * W) / H}vh)`; // the whole image fits on screen
  $("r-width").textContent = result.width;
  $("r-reason").textContent = result.reason;
  $("r-reason-text").textContent = REASONS[result.reason] || "";
  $("r-gflops").textContent = gflops(result.flops);
  $("r-flops").textContent = `${count(result.flops)} FLOPs · ${result.tiles} tile${result.tiles > 1 ? "s" : ""}`;
  $("r-size").textContent = `${W}×${H} px`;
  $("r-bytes").textContent = `${count(result.blob.size)} bytes · ${result.format.toUpperCase()}`;
  $("r-share").textContent = "";
  drawTiming(result);
  const base = state.file.name.replace(/\.[^.]*$/, "") || "image";
  $("download").href = state.afterUrl;
  $("download").download = `${base}-${scaleText().replace(/[^0-9.a-z]+/g, "")}-w${result.width}.${result.format}`;
  $("download").textContent = `Download ${result.format.toUpperCase()} (${count(result.blob.size)} bytes)`;
  $("error").hidden = true;
  $("empty").hidden = true;
  $("result").hidden = false;
  setSplit();
  drawCrops();
  if (state.input) {
    const table = await flopsTable(state.input);
    const widest = widthLabel(Math.max(...state.model.served_widths));
    const full = table.per_width[widest].flops;
    $("r-share").textContent = `· ${Math.round((100 * result.flops) / full)}% of width ${widest}`;
  }
}

async function run() {
  if (!state.file || state.busy) return;
  setBusy(`Upscaling ${state.file.name} ${scaleText()}…`);
  try {
    await showResult(await upscale());
  } catch (error) {
    $("result").hidden = true;
    showError(error);
  } finally {
    setBusy("");
  }
}

async function pixels(blob) {
  const bitmap = await createImageBitmap(blob);
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const context = canvas.getContext("2d");
  context.drawImage(bitmap, 0, 0);
  return { bitmap, data: context.getImageData(0, 0, bitmap.width, bitmap.height).data };
}

/** PSNR over RGB in dB (8-bit peak), or null when the two cannot be compared. */
function psnr(a, b) {
  if (a.bitmap.width !== b.bitmap.width || a.bitmap.height !== b.bitmap.height) return null;
  let sum = 0;
  for (let i = 0; i < a.data.length; i += 4) {
    for (let c = 0; c < 3; c++) { const d = a.data[i + c] - b.data[i + c]; sum += d * d; }
  }
  const mse = sum / ((a.data.length / 4) * 3);
  return mse === 0 ? Infinity : 10 * Math.log10((255 * 255) / mse);
}

function cell(row, content) {
  const td = row.insertCell();
  if (content instanceof Node) td.append(content); else td.textContent = content;
  return td;
}

async function compare() {
  if (!state.file || state.busy) return;
  const widths = [...state.model.served_widths].sort((a, b) => a - b); // the widest, last, is the reference
  const results = [];
  $("compare-panel").hidden = false;
  $("compare-rows").replaceChildren();
  state.compared = [];
  try {
    for (const width of widths) {
      setBusy(`Comparing widths: ${widthLabel(width)} (${results.length + 1} of ${widths.length})…`);
      results.push(await upscale(width));
    }
    const decoded = await Promise.all(results.map((result) => pixels(result.blob)));
    const reference = decoded.at(-1), full = results.at(-1).flops;
    results.forEach((result, i) => {
      const row = $("compare-rows").insertRow();
      const head = document.createElement("th");
      head.scope = "row";
      head.textContent = result.width;
      row.append(head);
      const flops = cell(row, `${gflops(result.flops)} · ${Math.round((100 * result.flops) / full)}%`);
      flops.append(segment(result.flops / full, colour(result.width)));
      flops.lastChild.className = "share";
      cell(row, `${ms(result.timing.total)} (compute ${ms(result.timing.compute)})`);
      const quality = i === decoded.length - 1 ? null : psnr(decoded[i], reference);
      cell(row, i === decoded.length - 1 ? "reference" : quality === null ? "n/a (sizes differ)" :
        quality === Infinity ? "identical" : `${quality.toFixed(2)} dB`);
      const canvas = document.createElement("canvas");
      state.compared.push({ canvas, bitmap: decoded[i].bitmap });
      canvas.setAttribute("role", "img");
      canvas.setAttribute("aria-label", `1:1 crop of the output at width ${result.width}`);
      cell(row, canvas);
    });
    drawCrops();
  } catch (error) {
    showError(error);
  } finally {
    setBusy("");
  }
}

/** Prometheus text format → [{name, labels, value}] (comments and blank lines skipped). */
function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!match) continue;
    const labels = Object.fromEntries([...(match[2] || "").matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    samples.push({ name: match[1], labels, value: Number(match[3]) });
  }
  return samples;
}

function drawMix(samples) {
  const now = Date.now(), counts = {};
  for (const s of samples) {
    if (s.name === "anysr_width_selected_total") counts[s.labels.width] = (counts[s.labels.width] || 0) + s.value;
  }
  state.mix.push({ at: now, counts });
  while (state.mix.length > 2 && state.mix[1].at <= now - MIX_WINDOW_MS) state.mix.shift();
  const first = state.mix[0].counts;
  const recent = Object.entries(counts).map(([width, n]) => [width, n - (first[width] || 0)]).filter(([, n]) => n > 0);
  recent.sort((a, b) => Number(a[0]) - Number(b[0]));
  const total = recent.reduce((sum, [, n]) => sum + n, 0);
  $("mix-bar").replaceChildren(...recent.map(([width, n]) => segment(n / total, colour(width))));
  const items = recent.map(([width, n]) => legendItem(`${width}: ${n} (${Math.round((100 * n) / total)}%)`, colour(width)));
  $("mix-legend").replaceChildren(...(items.length ? items : [legendItem("no upscales in the last minute", "var(--other)")]));
  $("mix-bar").setAttribute("aria-label", items.length ? items.map((i) => i.textContent).join(", ") : "No upscales in the last minute");
}

async function pollStatus() {
  if (!document.hidden) {
    try {
      const samples = parseMetrics(await (await api("/metrics")).text());
      const value = (name) => (samples.find((s) => s.name === name) || { value: NaN }).value;
      const cpu = value("anysr_cpu_utilisation_ratio"), gpu = value("anysr_gpu_utilisation_ratio");
      const busy = Number.isFinite(gpu) ? `GPU ${Math.round(100 * gpu)}%` : Number.isFinite(cpu) ? `other CPU ${Math.round(100 * cpu)}%` : "";
      $("s-load").textContent = `${LOAD_LEVELS[value("anysr_load_level")] || "–"}${busy ? ` · ${busy}` : ""}`;
      $("s-queue").textContent = `${value("anysr_queue_depth_tiles")} tiles · ${value("anysr_queue_work_seconds").toFixed(1)} s`;
      $("s-flight").textContent = String(value("anysr_in_flight_requests"));
      drawMix(samples);
      $("s-note").textContent = `From /metrics every 3 s; updated ${new Date().toLocaleTimeString("en-GB")}.`;
    } catch (error) {
      $("s-note").textContent = `Live status unavailable: ${error.message}`;
    }
  }
  setTimeout(pollStatus, 3000);
}

function wire() {
  $("file").addEventListener("change", () => setFile($("file").files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => { event.preventDefault(); drop.classList.remove("over"); setFile(event.dataTransfer.files[0]); });
  $("scale-range").addEventListener("input", () => { $("scale").value = $("scale-range").value; refreshCosts(); });
  $("scale").addEventListener("input", () => { $("scale-range").value = $("scale").value; refreshCosts(); });
  for (const id of ["scale-h", "scale-w"]) $(id).addEventListener("input", refreshCosts);
  $("per-axis").addEventListener("change", () => {
    const perAxis = $("per-axis").checked;
    $("axis-scales").hidden = !perAxis;
    $("scale").disabled = $("scale-range").disabled = perAxis;
    if (perAxis) $("scale-h").value = $("scale-w").value = $("scale").value;
    refreshCosts();
  });
  for (const radio of document.querySelectorAll("input[name=budget]")) {
    radio.addEventListener("change", () => {
      $("budget-width").disabled = radio.value !== "width";
      $("budget-gflops").disabled = radio.value !== "gflops";
    });
  }
  $("format").addEventListener("change", () => { $("quality-label").hidden = !LOSSY.includes($("format").value); });
  // A server with API keys refuses /v1/model until a key is typed: read it again once one is.
  $("api-key").addEventListener("change", () => {
    if (!state.model) { $("error").hidden = true; loadModel(); }
  });
  $("controls").addEventListener("submit", (event) => { event.preventDefault(); run(); });
  $("compare").addEventListener("click", compare);
  $("split").addEventListener("input", setSplit);
  $("viewer").addEventListener("click", (event) => {
    const box = $("viewer").getBoundingClientRect();
    state.crop = { x: (event.clientX - box.left) / box.width, y: (event.clientY - box.top) / box.height };
    drawCrops();
  });
  $("viewer").addEventListener("keydown", (event) => {
    const step = { ArrowLeft: [-0.05, 0], ArrowRight: [0.05, 0], ArrowUp: [0, -0.05], ArrowDown: [0, 0.05] }[event.key];
    if (!step) return;
    event.preventDefault();
    state.crop = { x: clamp(state.crop.x + step[0], 0, 1), y: clamp(state.crop.y + step[1], 0, 1) };
    drawCrops();
  });
}

wire();
loadModel();
pollStatus();
