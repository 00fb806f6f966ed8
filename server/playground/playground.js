// The playground: chat with a served model through the server's own OpenAI API (streamed SSE).
"use strict";

const $ = (id) => document.getElementById(id);
const history = []; // {role, content} of the conversation so far
let controller = null; // the AbortController of the answer being streamed

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function errorMessage(resp) {
  try {
    const body = await resp.json();
    if (body && body.error && body.error.message) return `${resp.status}: ${body.error.message}`;
  } catch (_) { /* not JSON */ }
  return `${resp.status} ${resp.statusText}`;
}

// clearError: false after a chat turn, so the turn's own error stays on screen.
async function loadModels(clearError = true) {
  const select = $("model");
  const previous = select.value || sessionStorage.getItem("qs-model");
  try {
    const resp = await fetch("/v1/models", { headers: headers() });
    if (!resp.ok) throw new Error(await errorMessage(resp));
    const { data } = await resp.json();
    select.replaceChildren(...data.map((m) => {
      const option = new Option(`${m.id} (${m.state || "loaded"})`, m.id);
      option.selected = m.id === previous;
      return option;
    }));
    if (clearError) showError("");
  } catch (err) {
    showError(`Could not list the models: ${err.message}`);
  }
}

function bubble(role, text) {
  const div = document.createElement("div");
  div.className = `msg ${role}`;
  div.textContent = text;
  $("messages").append(div);
  div.scrollIntoView({ block: "end" });
  return div;
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
}

// Yields the JSON payload of each SSE "data:" line until [DONE].
async function* events(resp) {
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, end).trim();
      buffer = buffer.slice(end + 1);
      if (!line.startsWith("data:")) continue;
      const data = line.slice(5).trim();
      if (data === "[DONE]") return;
      yield JSON.parse(data);
    }
  }
}

async function send(text) {
  showError("");
  history.push({ role: "user", content: text });
  bubble("user", text);
  const system = $("system").value.trim();
  const body = {
    model: $("model").value,
    messages: system ? [{ role: "system", content: system }, ...history] : [...history],
    stream: true,
    stream_options: { include_usage: true },
    temperature: Number($("temperature").value),
    max_tokens: Number($("max-tokens").value),
  };
  controller = new AbortController();
  setBusy(true);
  const started = performance.now();
  let first = null, last = null, pieces = 0, usage = null, answer = "";
  const out = bubble("assistant", "");
  try {
    const resp = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(), body: JSON.stringify(body), signal: controller.signal,
    });
    if (!resp.ok) throw new Error(await errorMessage(resp));
    for await (const event of events(resp)) {
      if (event.error) throw new Error(event.error.message);
      if (event.usage) usage = event.usage;
      const delta = event.choices && event.choices[0] && event.choices[0].delta;
      if (delta && delta.content) {
        last = performance.now();
        if (first === null) first = last;
        pieces += 1;
        answer += delta.content;
        out.textContent = answer;
        out.scrollIntoView({ block: "end" });
      }
    }
  } catch (err) {
    if (err.name === "AbortError") out.classList.add("stopped");
    else showError(err.message);
  } finally {
    controller = null;
    setBusy(false);
  }
  if (answer) {
    history.push({ role: "assistant", content: answer });
  } else {
    out.remove();
    history.pop(); // nothing came back: the next turn is sent without this question
  }
  const tokens = usage ? usage.completion_tokens : pieces;
  const seconds = first !== null && last > first ? (last - first) / 1000 : null;
  const rate = seconds ? `${((tokens - 1) / seconds).toFixed(1)} tokens/s` : "";
  const ttft = first !== null ? `first token ${((first - started) / 1000).toFixed(2)} s` : "";
  $("stats").textContent = tokens ? [`${tokens} tokens`, rate, ttft].filter(Boolean).join(" · ") : "";
  loadModels(false); // states change as models load and unload
}

$("composer").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("prompt").value.trim();
  if (!text || controller) return;
  $("prompt").value = "";
  send(text);
});
$("prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) {
    e.preventDefault();
    $("composer").requestSubmit();
  }
});
$("stop").addEventListener("click", () => controller && controller.abort());
$("clear").addEventListener("click", () => {
  history.length = 0;
  $("messages").replaceChildren();
  $("stats").textContent = "";
  showError("");
});
$("model").addEventListener("change", () => sessionStorage.setItem("qs-model", $("model").value));
$("api-key").addEventListener("change", () => {
  sessionStorage.setItem("qs-key", $("api-key").value);
  loadModels();
});
$("reload-models").addEventListener("click", () => loadModels());
$("api-key").value = sessionStorage.getItem("qs-key") || "";
loadModels();
