// The page: loads the service's state, the parameter table and the voices, then speaks through the
// WebSocket with streamed playback. Nothing about ranges or defaults is written here: it all comes
// from GET /api/parameters.

import { ApiError, getJson, getToken, request, setToken, webSocketUrl } from "./api.js";
import { StreamPlayer } from "./player.js";
import { wavDataOffset, wavFile } from "./wav.js";

const $ = (id) => document.getElementById(id);
const player = new StreamPlayer();
const state = { table: null, voices: [], defaultVoice: null, models: [], socket: null, current: null, seq: 0 };
// What the last request did, for people and for the browser test.
window.chatterbox = { state: "loading", last: null };

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

// ---------------------------------------------------------------------------------------- start-up

async function loadService() {
  try {
    const response = await fetch("health");
    const health = await response.json();
    state.models = health.loaded_models || [];
    $("service-status").textContent =
      health.status === "healthy"
        ? `Ready on ${health.device} · models: ${state.models.join(", ")} · version ${health.version}`
        : `Not ready: ${health.error ? health.error.message : health.status}`;
  } catch (err) {
    $("service-status").textContent = `The service does not answer (${err.message})`;
  }
}

async function loadProtected() {
  try {
    const [table, voices] = await Promise.all([getJson("api/parameters"), getJson("api/voices")]);
    state.table = table;
    $("token-form").hidden = true;
    buildControls(table);
    showVoices(voices);
    $("speak-form").hidden = false;
    window.chatterbox.state = "ready";
    showError("");
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      askForToken(getToken() ? `The token was refused: ${err.message}` : "This server needs an API token.");
    } else {
      showError(`Cannot load the page's data: ${err.message}`);
    }
  }
}

function askForToken(message) {
  $("token-message").textContent = message;
  $("token-form").hidden = false;
  $("speak-form").hidden = true;
  window.chatterbox.state = "token";
  if (getToken()) showError(message);
  $("token").focus();
}

$("token-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  setToken($("token").value.trim());
  closeSocket();
  showError("");
  await loadProtected();
});

// ---------------------------------------------------------------------------------------- controls

function buildControls(table) {
  fillSelect($("model"), state.models.map((m) => [m, m]));
  const names = new Intl.DisplayNames([navigator.language || "en"], { type: "language" });
  fillSelect(
    $("language"),
    table.languages.map((code) => [code, `${names.of(code) || code} (${code})`]),
  );
  $("language").value = table.default_language;
  fillSelect($("format"), table.formats.map((f) => [f, f === "pcm_s16le" ? "PCM 16-bit" : f.toUpperCase()]));
  $("format").value = table.default_format;

  const box = $("parameters");
  box.replaceChildren(...table.parameters.map(parameterControl));
  $("model").addEventListener("change", applyModel);
  applyModel();
}

function fillSelect(select, options) {
  select.replaceChildren(
    ...options.map(([value, label]) => {
      const option = document.createElement("option");
      option.value = value;
      option.textContent = label;
      return option;
    }),
  );
}

// A slider where the table gives a closed range and a default; a number box otherwise (seed, caps).
function parameterControl(p) {
  const id = `param-${p.name}`;
  const wrap = document.createElement("div");
  wrap.className = "param";
  wrap.dataset.name = p.name;
  const label = document.createElement("label");
  label.htmlFor = id;
  const title = document.createElement("span");
  title.textContent = p.name.replaceAll("_", " ");
  label.append(title);
  const help = document.createElement("small");
  help.id = `${id}-help`;
  help.textContent = p.description || "";
  const row = document.createElement("div");
  row.className = "row";
  const input = document.createElement("input");
  input.id = id;
  input.name = p.name;
  input.setAttribute("aria-describedby", help.id);
  const slider = p.minimum !== null && p.maximum !== null && Object.values(p.default).every((v) => v !== null);
  if (slider) {
    input.type = "range";
    input.min = p.minimum;
    input.max = p.maximum;
    input.step = p.type === "int" ? 1 : 0.01;
    const output = document.createElement("output");
    output.htmlFor = id;
    label.append(output);
    const reset = document.createElement("button");
    reset.type = "button";
    reset.textContent = "Default";
    reset.setAttribute("aria-label", `Reset ${title.textContent} to the model's default`);
    reset.addEventListener("click", () => {
      delete input.dataset.touched;
      setToDefault(p, input);
    });
    input.addEventListener("input", () => {
      input.dataset.touched = "1";
      output.textContent = input.value;
    });
    row.append(input, reset);
  } else {
    input.type = "number";
    input.step = 1;
    if (p.minimum !== null) input.min = p.minimum;
    if (p.maximum !== null) input.max = p.maximum;
    input.placeholder = "server default";
    input.inputMode = "numeric";
    row.append(input);
  }
  wrap.append(label, row, help);
  return wrap;
}

function setToDefault(p, input) {
  if (input.type !== "range") return;
  input.value = p.default[$("model").value];
  input.closest(".param").querySelector("output").textContent = input.value;
}

// The selected model's tags (read by the predictor from its tokenizer: turbo's [laugh], [sigh]...),
// as buttons that put the tag where the cursor is in the text. Models without tags show none.
function showTags(model) {
  const tags = state.table.tags[model] || [];
  $("tags").replaceChildren(
    ...tags.map((tag) => {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = tag;
      button.addEventListener("click", () => insertAtCursor($("text"), tag));
      return button;
    }),
  );
  $("tags").hidden = tags.length === 0;
}

// A space is added where the tag would touch a word, so that it stays a tag of its own.
function insertAtCursor(textarea, snippet) {
  const { selectionStart: start, selectionEnd: end, value } = textarea;
  const before = /\S$/.test(value.slice(0, start)) ? " " : "";
  const after = /^[^\s.,;:!?]/.test(value.slice(end)) ? " " : "";
  textarea.setRangeText(before + snippet + after, start, end, "end");
  textarea.focus();
}

function applyModel() {
  const model = $("model").value;
  $("language-field").hidden = !state.table.language_models.includes(model);
  showTags(model);
  for (const p of state.table.parameters) {
    const input = $(`param-${p.name}`);
    const used = p.models.includes(model);
    input.disabled = !used;
    input.closest(".param").classList.toggle("unused", !used);
    if (!input.dataset.touched) setToDefault(p, input);
  }
  showVoices();
}

function showVoices(listing) {
  if (listing) {
    state.voices = listing.voices;
    state.defaultVoice = listing.default_voice;
  }
  const select = $("voice");
  const previous = select.value;
  const model = $("model").value;
  const options = [["", state.defaultVoice ? `Default (${state.defaultVoice})` : "Built-in voice"]];
  fillSelect(
    select,
    options.concat(state.voices.map((v) => [v.name, `${v.name} · ${v.duration_seconds?.toFixed(1) ?? "?"} s`])),
  );
  for (const option of select.options) {
    const voice = state.voices.find((v) => v.name === option.value);
    // turbo needs a reference longer than 5 s (the listing says which are)
    option.disabled = Boolean(voice && model === "turbo" && !voice.turbo_ok);
  }
  if ([...select.options].some((o) => o.value === previous && !o.disabled)) select.value = previous;
}

$("upload").addEventListener("click", async () => {
  const file = $("voice-file").files[0];
  if (!file) {
    showError("Choose an audio file to upload first.");
    return;
  }
  const upload = async (overwrite) => {
    const form = new FormData();
    form.append("file", file);
    return (await request(`api/voices/upload${overwrite ? "?overwrite=true" : ""}`, { method: "POST", body: form })).json();
  };
  try {
    let result;
    try {
      result = await upload(false);
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 409 && confirm(`${err.message}. Replace it?`))) throw err;
      result = await upload(true);
    }
    showVoices(await getJson("api/voices"));
    $("voice").value = result.name;
    showError("");
  } catch (err) {
    handleError(err, "Upload failed");
  }
});

function handleError(err, what) {
  if (err instanceof ApiError && err.status === 401) askForToken(`The token was refused: ${err.message}`);
  else showError(`${what}: ${err.message}`);
}

// ---------------------------------------------------------------------------------------- speaking

function sayMessage(id) {
  const model = $("model").value;
  const voice = {};
  for (const p of state.table.parameters) {
    if (!p.models.includes(model)) continue;
    const input = $(`param-${p.name}`);
    if (input.value === "") continue;
    voice[p.name] = Number(input.value);
  }
  if ($("voice").value) voice.audio_prompt_path = $("voice").value;
  const message = { type: "say", id, text: $("text").value, model, voice, audio: { format: $("format").value } };
  if (state.table.language_models.includes(model)) message.language_id = $("language").value;
  return message;
}

class SocketClosed extends Error {
  constructor(event) {
    super(event.reason ? `${event.reason} (code ${event.code})` : `code ${event.code}`);
    this.code = event.code;
  }
}

// One connection, reused by later requests; the server sends "ready" before it takes requests.
function openSocket() {
  if (state.socket && state.socket.readyState <= WebSocket.OPEN) return state.socket.ready;
  const socket = new WebSocket(webSocketUrl());
  state.socket = socket;
  socket.ready = new Promise((resolve, reject) => {
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "ready") resolve(socket);
      else onMessage(message);
    };
    socket.onclose = (event) => {
      if (state.socket === socket) state.socket = null;
      const closed = new SocketClosed(event);
      reject(closed); // no effect once it was ready
      if (state.current && state.current.socket === socket) fail(closed);
    };
  });
  return socket.ready;
}

function fail(err) {
  // 1008: the adapter's close code for a missing or wrong token (adapter/auth.py)
  if (err instanceof SocketClosed && err.code === 1008) askForToken(`The token was refused: ${err.message}`);
  finish(err instanceof SocketClosed ? `The connection closed: ${err.message}` : err.message);
}

function closeSocket() {
  if (state.socket) state.socket.close();
  state.socket = null;
}

$("speak-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (state.current) return;
  showError("");
  const started = performance.now();
  await player.unlock();
  player.reset();
  const id = `r${++state.seq}`;
  const message = sayMessage(id);
  const current = { id, started, firstAudio: null, pcm: [], format: message.audio.format, sampleRate: state.table.sample_rate };
  state.current = current;
  window.chatterbox.state = "speaking";
  $("speak").disabled = true;
  $("stop").disabled = false;
  try {
    current.socket = await openSocket();
    if (state.current === current) current.socket.send(JSON.stringify(message));
  } catch (err) {
    if (state.current === current) fail(err);
  }
});

$("stop").addEventListener("click", () => {
  player.stop();
  // Closing the socket cancels the generation on the server.
  closeSocket();
  finish("Stopped.");
});

function onMessage(message) {
  const current = state.current;
  if (!current || message.id !== current.id) return;
  if (message.type === "chunk") {
    let bytes = Uint8Array.from(atob(message.data), (c) => c.charCodeAt(0));
    if (current.format === "wav" && message.index === 0) {
      const view = new DataView(bytes.buffer);
      current.sampleRate = view.getUint32(24, true);
      bytes = bytes.subarray(wavDataOffset(bytes));
    }
    if (bytes.byteLength && current.firstAudio === null) current.firstAudio = performance.now();
    current.pcm.push(bytes);
    player.schedule(bytes, current.sampleRate);
  } else if (message.type === "done") {
    current.duration = message.duration_seconds;
    finish(null);
  } else if (message.type === "error") {
    finish(`Error ${message.code}: ${message.message}`);
  }
}

function finish(error) {
  const current = state.current;
  if (!current) return;
  state.current = null;
  $("speak").disabled = false;
  $("stop").disabled = true;
  const elapsed = (performance.now() - current.started) / 1000;
  const audioSeconds = current.pcm.reduce((n, c) => n + c.byteLength, 0) / 2 / current.sampleRate;
  const result = {
    id: current.id,
    error,
    ttfaMs: current.firstAudio === null ? null : Math.round(current.firstAudio - current.started),
    durationSeconds: current.duration ?? audioSeconds,
    realTimeFactor: audioSeconds > 0 ? elapsed / audioSeconds : null,
    scheduledChunks: player.scheduledChunks,
    scheduledSeconds: player.scheduledSeconds,
    underruns: player.underruns,
    download: null,
  };
  $("stat-ttfa").textContent = result.ttfaMs === null ? "–" : `${result.ttfaMs} ms`;
  $("stat-rtf").textContent = result.realTimeFactor === null ? "–" : result.realTimeFactor.toFixed(2);
  $("stat-duration").textContent = `${result.durationSeconds.toFixed(2)} s`;
  const link = $("download");
  if (link.href.startsWith("blob:")) URL.revokeObjectURL(link.href);
  if (audioSeconds > 0) {
    link.href = URL.createObjectURL(wavFile(current.pcm, current.sampleRate));
    link.download = `chatterbox-${new Date().toISOString().replaceAll(":", "-").slice(0, 19)}.wav`;
    result.download = link.href;
  }
  link.hidden = audioSeconds <= 0;
  $("result").hidden = false;
  if (error) showError(error);
  window.chatterbox.last = result;
  window.chatterbox.state = error ? "error" : "done";
}

await loadService();
await loadProtected();
