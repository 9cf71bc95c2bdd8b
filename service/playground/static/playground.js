// Chorus playground: calls the server's own OpenAI-compatible API, plays audio while it streams.
// No build step, no dependencies. The API key lives in `state.apiKey` only (never storage, never URLs).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const OPENAI_ALIASES = new Set(["chorus", "tts-1", "tts-1-hd", "gpt-4o-mini-tts"]);
  const MIME = { mp3: "audio/mpeg", aac: "audio/aac", wav: "audio/wav", pcm: "audio/pcm", flac: "audio/flac", opus: "audio/ogg" };
  const EXTENSION = { mp3: "mp3", aac: "aac", wav: "wav", pcm: "pcm", flac: "flac", opus: "ogg" };
  const HISTORY_SIZE = 5;
  const MAX_SEED = (1n << 63n) - 1n;

  const state = {
    apiKey: null,
    authRequired: false,
    maxInputChars: 4096,
    audioContext: null,
    controller: null,
    sink: null,
    history: [],
    wordTimestamps: false,
  };

  // ---- small helpers ----------------------------------------------------------------------------

  function setStatus(text) {
    $("status").textContent = text;
  }

  function showError(text) {
    const box = $("error");
    box.textContent = text;
    box.hidden = !text;
  }

  function authHeaders(extra) {
    const headers = { ...extra };
    if (state.apiKey) headers["X-API-Key"] = state.apiKey;
    return headers;
  }

  class ApiError extends Error {
    constructor(message, status) {
      super(message);
      this.status = status;
    }
  }

  // The server's own words: OpenAI's {"error": {"message"}} or Chorus's {"detail"}.
  async function apiError(response) {
    let message = response.statusText || "request failed";
    try {
      const body = await response.json();
      message = (body && body.error && body.error.message) || (body && body.detail) || JSON.stringify(body);
    } catch (_) {
      /* not JSON: keep the status text */
    }
    return new ApiError(`${response.status} ${message}`, response.status);
  }

  async function getJson(path) {
    const response = await fetch(path, { headers: authHeaders({}), cache: "no-store" });
    if (!response.ok) throw await apiError(response);
    return response.json();
  }

  function base64Bytes(text) {
    const binary = atob(text);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
    return bytes;
  }

  function seconds(ms) {
    return `${(ms / 1000).toFixed(2)} s`;
  }

  // Server-sent events from a fetch body (EventSource cannot POST or send headers).
  async function* serverEvents(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let cut = buffer.indexOf("\n\n");
      while (cut >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const data = block
          .split("\n")
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).trimStart())
          .join("\n");
        if (data) yield JSON.parse(data);
        cut = buffer.indexOf("\n\n");
      }
    }
  }

  // ---- WAV helpers --------------------------------------------------------------------------------

  function wavHeader(dataBytes, rate) {
    const view = new DataView(new ArrayBuffer(44));
    const text = (offset, s) => [...s].forEach((ch, i) => view.setUint8(offset + i, ch.charCodeAt(0)));
    text(0, "RIFF");
    view.setUint32(4, 36 + dataBytes, true);
    text(8, "WAVE");
    text(12, "fmt ");
    view.setUint32(16, 16, true);
    view.setUint16(20, 1, true);
    view.setUint16(22, 1, true);
    view.setUint32(24, rate, true);
    view.setUint32(28, rate * 2, true);
    view.setUint16(32, 2, true);
    view.setUint16(34, 16, true);
    text(36, "data");
    view.setUint32(40, dataBytes, true);
    return new Uint8Array(view.buffer);
  }

  // Where the samples of a WAV start and its rate, or null while the header is incomplete.
  function parseWavHeader(bytes) {
    if (bytes.length < 12) return null;
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    let rate = 0;
    let offset = 12;
    while (offset + 8 <= bytes.length) {
      const id = String.fromCharCode(...bytes.subarray(offset, offset + 4));
      const size = view.getUint32(offset + 4, true);
      if (id === "fmt " && offset + 16 <= bytes.length) rate = view.getUint32(offset + 12, true);
      if (id === "data") return { dataOffset: offset + 8, rate };
      offset += 8 + size + (size % 2);
    }
    return null;
  }

  // ---- audio sinks: how streamed bytes become sound -------------------------------------------

  // mp3/aac: Media Source Extensions feed the <audio> element as the bytes arrive.
  function mediaSourceSink(mime, player, onFirstAudio) {
    const source = new MediaSource();
    const queue = [];
    let buffer = null;
    let ended = false;
    let finished;
    const whenFinished = new Promise((resolve) => {
      finished = resolve;
    });
    const pump = () => {
      if (!buffer || buffer.updating) return;
      if (queue.length) {
        buffer.appendBuffer(queue.shift());
      } else if (ended) {
        if (source.readyState === "open") source.endOfStream();
        finished();
      }
    };
    source.addEventListener(
      "sourceopen",
      () => {
        buffer = source.addSourceBuffer(mime);
        buffer.mode = "sequence";
        buffer.addEventListener("updateend", pump);
        pump();
      },
      { once: true },
    );
    player.src = URL.createObjectURL(source);
    player.addEventListener("playing", onFirstAudio, { once: true });
    player.play().catch(() => {});
    return {
      push(bytes) {
        queue.push(bytes);
        pump();
      },
      end() {
        ended = true;
        pump();
        return whenFinished;
      },
      stop() {
        ended = true;
        queue.length = 0;
        player.pause();
      },
      position() {
        return player.currentTime;
      },
    };
  }

  // wav/pcm: the Web Audio API schedules each piece of 16-bit PCM right after the previous one.
  function pcmSink(format, rate, onFirstAudio) {
    const context = state.audioContext;
    const sources = [];
    let header = format === "wav" ? new Uint8Array(0) : null;
    let sampleRate = rate;
    let carry = null;
    let next = 0;
    let first = true;
    let startedAt = null;
    const play = (bytes) => {
      if (carry) {
        const joined = new Uint8Array(carry.length + bytes.length);
        joined.set(carry);
        joined.set(bytes, carry.length);
        bytes = joined;
        carry = null;
      }
      const usable = bytes.length - (bytes.length % 2);
      if (usable < bytes.length) carry = bytes.slice(usable);
      if (!usable) return;
      const view = new DataView(bytes.buffer, bytes.byteOffset, usable);
      const samples = new Float32Array(usable / 2);
      for (let i = 0; i < samples.length; i += 1) samples[i] = view.getInt16(2 * i, true) / 32768;
      const audio = context.createBuffer(1, samples.length, sampleRate);
      audio.copyToChannel(samples, 0);
      const node = context.createBufferSource();
      node.buffer = audio;
      node.connect(context.destination);
      const at = Math.max(context.currentTime + 0.02, next);
      node.start(at);
      sources.push(node);
      next = at + audio.duration;
      if (first) {
        first = false;
        startedAt = at;
        window.setTimeout(onFirstAudio, Math.max(0, (at - context.currentTime) * 1000));
      }
    };
    return {
      setRate(value) {
        sampleRate = value;
      },
      push(bytes) {
        if (header === null) {
          play(bytes);
          return;
        }
        const joined = new Uint8Array(header.length + bytes.length);
        joined.set(header);
        joined.set(bytes, header.length);
        const parsed = parseWavHeader(joined);
        if (!parsed) {
          header = joined;
          return;
        }
        sampleRate = parsed.rate || sampleRate;
        header = null;
        play(joined.subarray(parsed.dataOffset));
      },
      end() {
        return Promise.resolve();
      },
      position() {
        return startedAt === null ? -1 : context.currentTime - startedAt;
      },
      stop() {
        sources.forEach((node) => {
          try {
            node.stop();
          } catch (_) {
            /* already stopped */
          }
        });
      },
    };
  }

  // flac/opus: gathered whole, then played by the <audio> element.
  function wholeSink(player, onFirstAudio) {
    return {
      push() {},
      end() {
        player.addEventListener("playing", onFirstAudio, { once: true });
        return Promise.resolve();
      },
      stop() {
        player.pause();
      },
      position() {
        return player.currentTime;
      },
    };
  }

  // ---- captions: each word lit while it is said (word timestamps, when the model gives them) --------

  function clearCaptions() {
    $("captions").replaceChildren();
    $("captions").hidden = true;
  }

  function addCaptions(words) {
    const box = $("captions");
    for (const word of words) {
      const span = document.createElement("span");
      span.textContent = word.word;
      span.dataset.start = String(word.start_s);
      span.dataset.end = String(word.end_s);
      if (box.childNodes.length) box.append(" ");
      box.append(span);
    }
    box.hidden = false;
  }

  // Follows the sink's playback clock until another clip replaces it.
  function followCaptions(sink) {
    const spans = () => $("captions").querySelectorAll("span");
    const step = () => {
      if (state.sink !== sink) return;
      const at = sink.position();
      for (const span of spans()) {
        const start = Number(span.dataset.start);
        const end = Number(span.dataset.end);
        span.classList.toggle("said", at >= end);
        span.classList.toggle("current", at >= start && at < end);
      }
      window.requestAnimationFrame(step);
    };
    window.requestAnimationFrame(step);
  }

  // ---- models, voices and the key -------------------------------------------------------------

  function fillSelect(select, values, selected) {
    select.replaceChildren(
      ...values.map((value) => {
        const option = document.createElement("option");
        option.value = value;
        option.textContent = value;
        option.selected = value === selected;
        return option;
      }),
    );
  }

  async function loadCatalogue() {
    for (;;) {
      try {
        const listing = await getJson("/v1/models");
        const ids = listing.data.map((model) => model.id);
        const own = ids.filter((id) => !OPENAI_ALIASES.has(id));
        const models = own.length ? own : ids;
        fillSelect($("model"), models, models[0]);
        const names = await loadVoices();
        $("server-line").textContent =
          models.length > 1
            ? `Serving ${models.length} models: ${models.join(", ")}.`
            : `Serving ${models[0]} with ${names.length} voice(s).`;
        setStatus("Ready.");
        showError("");
        return true;
      } catch (error) {
        if (error instanceof ApiError && error.status === 503) {
          setStatus("The model is still loading; trying again in two seconds.");
          await new Promise((resolve) => window.setTimeout(resolve, 2000));
          continue;
        }
        showError(error instanceof ApiError ? `The server said: ${error.message}` : `Cannot reach the server: ${error}`);
        if (error instanceof ApiError && error.status === 401) {
          state.apiKey = null;
          $("key-section").hidden = false;
          $("api-key").focus();
          setStatus("The key was refused.");
        }
        return false;
      }
    }
  }

  // The chosen model's own voices (each model has its own).
  async function loadVoices() {
    const model = $("model").value;
    const voices = await getJson(`/v1/audio/voices?model=${encodeURIComponent(model)}`);
    const names = voices.data.map((voice) => voice.id);
    state.wordTimestamps = voices.word_timestamps === true; // a Chorus extension of the listing
    const chosen = voices.data.find((voice) => voice.default);
    fillSelect($("voice"), names, chosen ? chosen.id : names[0]);
    return names;
  }

  async function useKey(event) {
    event.preventDefault();
    const key = $("api-key").value.trim();
    if (!key) return;
    state.apiKey = key;
    setStatus("Checking the key…");
    if (await loadCatalogue()) {
      $("api-key").value = ""; // the key lives on in state.apiKey only
      $("key-section").hidden = true;
      $("text").focus();
    }
  }

  // ---- the request ------------------------------------------------------------------------------

  function requestBody() {
    const body = {
      model: $("model").value || "chorus",
      input: $("text").value,
      voice: $("voice").value || "default",
      response_format: $("format").value,
      speed: Number($("speed").value),
    };
    const temperature = $("temperature").value.trim();
    if (temperature !== "") body.temperature = Number(temperature);
    const textFormat = $("text-format").value;
    if (textFormat !== "markdown") body.text_format = textFormat; // a Chorus extension; markdown is the default
    return body;
  }

  // JSON with the seed written as digits: seeds go up to 2^63 - 1, beyond a JavaScript number's precision.
  function jsonWithSeed(body, seed) {
    const json = JSON.stringify(body);
    return seed === null ? json : `${json.slice(0, -1)},"seed":${seed}}`;
  }

  function readSeed() {
    const text = $("seed").value.trim();
    if (text === "") return null;
    if (!/^[0-9]{1,19}$/.test(text) || BigInt(text) > MAX_SEED) {
      throw new Error("The seed must be a whole number from 0 to 9223372036854775807.");
    }
    return BigInt(text).toString();
  }

  function shellQuote(text) {
    return `'${text.replaceAll("'", "'\\''")}'`;
  }

  function showSnippets(body, seed) {
    const origin = window.location.origin;
    const file = `speech.${EXTENSION[body.response_format]}`;
    const curl = [
      `curl -sS -X POST ${shellQuote(`${origin}/v1/audio/speech`)} \\`,
      `  -H 'Content-Type: application/json' \\`,
      ...(state.authRequired ? ['  -H "X-API-Key: $CHORUS_API_KEY" \\'] : []),
      `  -d ${shellQuote(jsonWithSeed(body, seed))} \\`,
      `  --output ${file}`,
    ];
    $("curl-snippet").textContent = curl.join("\n");
    const extra = [`"seed": ${seed}`];
    if (body.temperature !== undefined) extra.push(`"temperature": ${body.temperature}`);
    if (body.text_format !== undefined) extra.push(`"text_format": ${JSON.stringify(body.text_format)}`);
    const python = [
      "import os",
      "",
      "from openai import OpenAI",
      "",
      `client = OpenAI(base_url=${JSON.stringify(`${origin}/v1`)}, api_key=${
        state.authRequired ? 'os.environ["CHORUS_API_KEY"]' : '"unused"'
      })`,
      "with client.audio.speech.with_streaming_response.create(",
      `    model=${JSON.stringify(body.model)},`,
      `    voice=${JSON.stringify(body.voice)},`,
      `    input=${JSON.stringify(body.input)},`,
      `    response_format=${JSON.stringify(body.response_format)},`,
      `    speed=${body.speed},`,
      `    extra_body={${extra.join(", ")}},`,
      ") as response:",
      `    response.stream_to_file(${JSON.stringify(file)})`,
    ];
    $("python-snippet").textContent = python.join("\n");
  }

  function makeSink(format, player, onFirstAudio) {
    if ((format === "mp3" || format === "aac") && window.MediaSource && MediaSource.isTypeSupported(MIME[format])) {
      return mediaSourceSink(MIME[format], player, onFirstAudio);
    }
    if (format === "wav" || format === "pcm") return pcmSink(format, 24000, onFirstAudio);
    return wholeSink(player, onFirstAudio);
  }

  // The finished clip as a file: a streamed WAV's sizes are patched in; raw PCM is played as WAV.
  function clipBlobs(format, parts, rate) {
    const total = parts.reduce((sum, part) => sum + part.length, 0);
    const bytes = new Uint8Array(total);
    let offset = 0;
    for (const part of parts) {
      bytes.set(part, offset);
      offset += part.length;
    }
    if (format === "wav") {
      const parsed = parseWavHeader(bytes);
      if (parsed) {
        const view = new DataView(bytes.buffer);
        view.setUint32(4, total - 8, true);
        view.setUint32(parsed.dataOffset - 4, total - parsed.dataOffset, true);
      }
    }
    const file = new Blob([bytes], { type: MIME[format] });
    const playable = format === "pcm" ? new Blob([wavHeader(total, rate), bytes], { type: "audio/wav" }) : file;
    return { file, playable };
  }

  function stopPlayback() {
    if (state.controller) state.controller.abort();
    if (state.sink) state.sink.stop();
    state.controller = null;
    state.sink = null;
  }

  function resetFacts() {
    for (const id of ["fact-first-audio", "fact-total", "fact-duration", "fact-batch", "fact-seed"]) $(id).textContent = "–";
  }

  async function speak(event) {
    event.preventDefault();
    showError("");
    if (state.authRequired && !state.apiKey) {
      $("key-section").hidden = false;
      showError("Enter the API key first.");
      $("api-key").focus();
      return;
    }
    let seed;
    try {
      seed = readSeed();
    } catch (error) {
      showError(error.message);
      $("seed").focus();
      return;
    }
    stopPlayback();
    resetFacts();
    clearCaptions();
    const body = requestBody();
    const format = body.response_format;
    const player = $("player");
    if (format === "wav" || format === "pcm") {
      // Made (or resumed) inside the click so that the browser lets it make sound.
      state.audioContext = state.audioContext || new AudioContext();
      state.audioContext.resume();
      player.removeAttribute("src");
    }
    const started = performance.now();
    let firstAudioMs = null;
    const onFirstAudio = () => {
      firstAudioMs = performance.now() - started;
      $("fact-first-audio").textContent = seconds(firstAudioMs);
      setStatus("Playing while the rest streams…");
    };
    const controller = new AbortController();
    const sink = makeSink(format, player, onFirstAudio);
    state.controller = controller;
    state.sink = sink;
    followCaptions(sink);
    $("speak").disabled = true;
    $("stop").disabled = false;
    setStatus("Synthesizing…");
    const parts = [];
    let summary = null;
    try {
      const response = await fetch("/v1/audio/speech", {
        method: "POST",
        headers: authHeaders({ "Content-Type": "application/json" }),
        // Word timestamps only light the captions: the snippets below leave them out.
        body: jsonWithSeed({ ...body, stream_format: "sse", ...(state.wordTimestamps ? { timestamps: "word" } : {}) }, seed),
        signal: controller.signal,
      });
      if (!response.ok) throw await apiError(response);
      const usedSeed = response.headers.get("X-Seed");
      const rate = Number(response.headers.get("X-Sample-Rate")) || 24000;
      $("fact-seed").textContent = usedSeed || "–";
      if (sink.setRate) sink.setRate(rate);
      for await (const message of serverEvents(response.body)) {
        if (message.type === "speech.audio.delta") {
          const bytes = base64Bytes(message.audio);
          parts.push(bytes);
          sink.push(bytes);
        } else if (message.type === "speech.audio.words") {
          addCaptions(message.words);
        } else if (message.type === "speech.audio.done") {
          summary = message.chorus || {};
        }
      }
      await sink.end();
      if (summary === null) throw new Error("the stream ended before the audio was complete");
      const totalMs = performance.now() - started;
      $("fact-total").textContent = seconds(totalMs);
      $("fact-duration").textContent = `${Number(summary.audio_seconds).toFixed(3)} s`;
      $("fact-batch").textContent = String(summary.batch_size);
      const { file, playable } = clipBlobs(format, parts, summary.sample_rate || rate);
      if (format !== "mp3" && format !== "aac") {
        player.src = URL.createObjectURL(playable);
        if (format !== "wav" && format !== "pcm") player.play().catch(() => {});
      }
      addToHistory(body, usedSeed, summary, file, playable);
      showSnippets(body, usedSeed);
      setStatus(firstAudioMs === null ? "Done." : "Done: the whole clip has arrived.");
    } catch (error) {
      if (error.name === "AbortError") {
        setStatus("Stopped.");
      } else {
        sink.stop();
        showError(error instanceof ApiError ? `The server said: ${error.message}` : `Failed: ${error.message || error}`);
        setStatus("");
        if (error instanceof ApiError && error.status === 401) {
          state.apiKey = null;
          $("key-section").hidden = false;
        }
      }
    } finally {
      $("speak").disabled = false;
      $("stop").disabled = true;
      if (state.controller === controller) state.controller = null;
    }
  }

  // ---- history ----------------------------------------------------------------------------------

  function addToHistory(body, seed, summary, file, playable) {
    const fileUrl = URL.createObjectURL(file);
    const playUrl = playable === file ? fileUrl : URL.createObjectURL(playable);
    state.history.unshift({ fileUrl, playUrl });
    while (state.history.length > HISTORY_SIZE) {
      const old = state.history.pop();
      URL.revokeObjectURL(old.fileUrl);
      if (old.playUrl !== old.fileUrl) URL.revokeObjectURL(old.playUrl);
      $("history").lastElementChild.remove();
    }
    const item = document.createElement("li");
    const words = document.createElement("p");
    words.className = "clip-text";
    words.textContent = body.input.length > 120 ? `${body.input.slice(0, 117)}…` : body.input;
    const meta = document.createElement("p");
    meta.className = "hint";
    meta.textContent = `${body.voice} · ${body.response_format} · ${Number(summary.audio_seconds).toFixed(2)} s · speed ${body.speed} · seed ${seed}`;
    const audio = document.createElement("audio");
    audio.controls = true;
    audio.preload = "none";
    audio.src = playUrl;
    audio.setAttribute("aria-label", "Play this clip");
    const link = document.createElement("a");
    link.href = fileUrl;
    link.download = `chorus-${seed}.${EXTENSION[body.response_format]}`;
    link.textContent = `Download ${body.response_format}`;
    item.append(words, meta, audio, link);
    $("history").prepend(item);
    $("history-empty").hidden = true;
  }

  // ---- wiring -----------------------------------------------------------------------------------

  async function copySnippet(event) {
    const button = event.currentTarget;
    const text = $(button.dataset.copy).textContent;
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = "Copied";
    } catch (_) {
      const range = document.createRange();
      range.selectNodeContents($(button.dataset.copy));
      window.getSelection().removeAllRanges();
      window.getSelection().addRange(range);
      button.textContent = "Selected: press Ctrl+C";
    }
    window.setTimeout(() => {
      button.textContent = "Copy";
    }, 2000);
  }

  function updateCounts() {
    $("speed-value").textContent = `${Number($("speed").value).toFixed(2)}×`;
    $("text-count").textContent = `(${$("text").value.length} / ${state.maxInputChars})`;
  }

  async function start() {
    $("speak-form").addEventListener("submit", speak);
    $("key-form").addEventListener("submit", useKey);
    $("stop").addEventListener("click", () => {
      stopPlayback();
      setStatus("Stopped.");
    });
    $("speed").addEventListener("input", updateCounts);
    $("model").addEventListener("change", () =>
      loadVoices().catch((error) => showError(error instanceof ApiError ? `The server said: ${error.message}` : `${error}`)),
    );
    $("text").addEventListener("input", updateCounts);
    $("text").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("speak-form").requestSubmit();
    });
    document.querySelectorAll("button.copy").forEach((button) => button.addEventListener("click", copySnippet));
    updateCounts();
    try {
      const config = await (await fetch("/playground/config", { cache: "no-store" })).json();
      state.authRequired = Boolean(config.auth_required);
      state.maxInputChars = config.max_input_chars || state.maxInputChars;
      $("text").maxLength = state.maxInputChars;
      $("docs-link").hidden = config.docs === "off";
      updateCounts();
    } catch (error) {
      showError(`Cannot reach the server: ${error}`);
      return;
    }
    if (state.authRequired) {
      $("key-section").hidden = false;
      $("server-line").textContent = "This server needs an API key.";
      setStatus("Enter the API key to begin.");
      $("api-key").focus();
      return;
    }
    await loadCatalogue();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
