// The page: pick or record a clip, choose metadata fields or type an instruction, show the answer.
"use strict";

const $ = (id) => document.getElementById(id);
let clip = null;        // {blob, name}
let recorder = null;
let clipTranscript;     // the last transcript of this clip stays shown beside later answers

function headers(extra = {}) {
  const key = $("api-key").value || localStorage.getItem("speechllm-key");
  if ($("api-key").value) localStorage.setItem("speechllm-key", $("api-key").value);
  return key ? { ...extra, Authorization: "Bearer " + key } : extra;
}

async function call(path, options) {
  const response = await fetch(path, { ...options, headers: headers(options.headers) });
  const body = await response.text();
  let data;
  try { data = JSON.parse(body); } catch { data = { text: body }; }
  if (!response.ok) throw new Error((data.error && data.error.message) || response.status + " " + body);
  return data;
}

// The model that answers: the picker's choice on a server of several models, else the server's first ("" sends none).
const chosenModel = () => $("model-pick").value;

async function init() {
  // with an API key, /health names the model only to requests that send the key
  const health = await (await fetch("/health", { headers: headers() })).json();
  $("model").textContent = health.model ? "model: " + health.model : "";
  $("key-box").hidden = !health.auth_required;
  $("api-key").value = localStorage.getItem("speechllm-key") || "";
  try {
    const ids = (await call("/v1/models", {})).data.map((card) => card.id);
    const pick = $("model-pick"), previous = pick.value;
    pick.innerHTML = "";
    for (const id of ids) pick.add(new Option(id, id));
    if (ids.includes(previous)) pick.value = previous;
    pick.hidden = ids.length < 2;
    if (ids.length > 1) $("model").textContent = "model:";
    await showFields();
  } catch (e) { showError(e); }
}

// One checkbox per metadata field of the chosen model.
async function showFields() {
  try {
    const schema = await call("/v1/schema" + (chosenModel() ? "?model=" + encodeURIComponent(chosenModel()) : ""), {});
    $("fields").innerHTML = "";
    for (const field of schema.fields) {
      const label = document.createElement("label");
      label.title = field.labels.length ? field.labels.join(", ") : field.description;
      label.innerHTML = `<input type="checkbox" value="${field.name}" checked> ${field.name}`;
      $("fields").append(label);
    }
  } catch (e) { showError(e); }
}

function setClip(blob, name) {
  clip = { blob, name };
  clipTranscript = undefined;
  $("player").src = URL.createObjectURL(blob);
  $("player").hidden = false;
  $("clip-info").textContent = `${name}, ${(blob.size / 1024).toFixed(0)} kB`;
  $("analyze").disabled = $("transcribe").disabled = false;
}

$("file").addEventListener("change", () => {
  const file = $("file").files[0];
  if (file) setClip(file, file.name);
});

$("record").addEventListener("click", async () => {
  try {
    if (!recorder) {
      recorder = new WavRecorder();
      await recorder.start();
      $("record").textContent = "■ Stop";
      $("record").classList.add("recording");
      recorder.timer = setInterval(() => { $("rec-time").textContent = recorder.seconds.toFixed(1) + " s"; }, 200);
    } else {
      clearInterval(recorder.timer);
      const blob = await recorder.stop();
      recorder = null;
      $("record").textContent = "● Record";
      $("record").classList.remove("recording");
      setClip(blob, "recording.wav");
    }
  } catch (e) { recorder = null; showError(e); }
});

function base64(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result.split(",")[1]);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

function format(name) {
  const ext = name.split(".").pop().toLowerCase();
  return ext === name.toLowerCase() ? "wav" : ext;
}

async function run(what) {
  $("analyze").disabled = $("transcribe").disabled = true;
  $("status").textContent = "working…";
  const started = performance.now();
  try {
    let data;
    const instruction = $("instruction").value.trim();
    if (what === "transcribe") {
      const form = new FormData();
      form.append("file", clip.blob, clip.name);
      if (chosenModel()) form.append("model", chosenModel());
      data = await call("/v1/audio/transcriptions", { method: "POST", body: form });
      show({ transcript: data.text }, data);
    } else if (instruction) {
      const audio = { type: "input_audio", input_audio: { data: await base64(clip.blob), format: format(clip.name) } };
      data = await call("/v1/chat/completions", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ model: chosenModel() || undefined,
                               messages: [{ role: "user", content: [{ type: "text", text: instruction }, audio] }] }),
      });
      show({ answer: data.choices[0].message.content }, data);
    } else {
      const form = new FormData();
      form.append("file", clip.blob, clip.name);
      const fields = [...document.querySelectorAll("#fields input:checked")].map((x) => x.value);
      if (!fields.length) throw new Error("choose at least one field, or type an instruction");
      fields.forEach((f) => form.append("fields", f));
      if (chosenModel()) form.append("model", chosenModel());
      data = await call("/v1/metadata", { method: "POST", body: form });
      show({ transcript: data.metadata.Transcript, metadata: data }, data);
    }
    $("status").textContent = `done in ${((performance.now() - started) / 1000).toFixed(2)} s`;
  } catch (e) {
    showError(e);
    $("status").textContent = "";
  } finally {
    $("analyze").disabled = $("transcribe").disabled = !clip;
  }
}

function show({ transcript, answer, metadata }, raw) {
  $("result").hidden = false;
  $("error").hidden = true;
  if (transcript !== undefined) clipTranscript = transcript;
  $("transcript-box").hidden = clipTranscript === undefined;
  $("transcript").textContent = clipTranscript ?? "";
  $("answer-box").hidden = answer === undefined;
  $("answer").textContent = answer ?? "";
  const body = $("meta").querySelector("tbody");
  body.innerHTML = "";
  $("meta").hidden = !metadata;
  if (metadata) {
    // No speech, no speaker: a null label is "no speaker" when SpeechActivity is false, else "not sure"
    // (below min_confidence); neither shows a confidence bar, which would read as a claim.
    const noSpeech = metadata.metadata.SpeechActivity === false;
    if (noSpeech && !metadata.metadata.Transcript) $("transcript").textContent = "(no speech)";
    for (const [name, value] of Object.entries(metadata.metadata)) {
      if (name === "Transcript") continue;
      const conf = metadata.confidences[name];
      const row = body.insertRow();
      row.insertCell().textContent = name;
      const label = row.insertCell();
      label.textContent = value === null ? (noSpeech ? "no speaker" : "not sure") : String(value);
      if (value === null) label.className = "null";
      const cell = row.insertCell();
      if (conf !== undefined && value !== null) {  // the bar's width is set through the DOM: the CSP forbids inline styles
        const bar = document.createElement("span");
        bar.className = "bar";
        bar.style.width = Math.round(conf * 80) + "px";
        cell.append(bar, `${(conf * 100).toFixed(1)} %`);
      }
    }
  }
  $("raw").textContent = JSON.stringify(raw, null, 2);
}

function showError(e) {
  $("result").hidden = false;
  $("error").hidden = false;
  $("error").textContent = e.message || String(e);
}

$("api-key").addEventListener("change", () => { $("result").hidden = true; init(); });
$("model-pick").addEventListener("change", () => { $("result").hidden = true; showFields(); });
$("analyze").addEventListener("click", () => run("analyze"));
$("transcribe").addEventListener("click", () => run("transcribe"));
init();
