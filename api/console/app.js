// The console page: key, upload, live status, result, face tags, enrol, recognise, persons, batches, usage.
// Every action is one or two calls of the public API (api.js); nothing here is private to the console.

import { ApiError, apiKey, call, faceImage, health, poll } from "./api.js";
import { drawFaces, markSelected } from "./stage.js";
import { renderTags } from "./tags.js";

const $ = (selector) => document.querySelector(selector);
const STEPS = ["queued", "processing", "done"];
// detection_flags offered as checkboxes: [flag, what it adds, ticked by default].
const FLAGS = [
  ["propoints", "dense points", true],
  ["classifiers", "age, gender, expression, pose, quality", true],
  ["extended", "colours, measurements", false],
  ["liveness", "liveness", false],
  ["bestface", "best face only", false],
  ["basic", "box, 5 points, embedding only", false],
];

let selected = null; // the face whose details are shown
let generation = 0; // bumped by each upload, so an older poll stops drawing

// Errors ----------------------------------------------------------------------------------------------

function showError(err) {
  if (err instanceof ApiError && err.status === 401) return askForKey(`Key not accepted: ${err.message}`);
  $("#error-text").textContent = err instanceof ApiError ? err.message : `UNEXPECTED: ${err}`;
  $("#error").hidden = false;
}

function clearError() {
  $("#error").hidden = true;
}

// Runs an async action from an event; any failure lands in the error banner.
const guarded = (action) => (event) => {
  event?.preventDefault();
  clearError();
  action(event).catch(showError);
};

// API key ---------------------------------------------------------------------------------------------

function askForKey(message = "") {
  apiKey.clear();
  clearTimeout(batchesTimer);
  batchesAsked++;
  document.body.dataset.view = "key";
  $("#console").hidden = true;
  $("#forget-key").hidden = true;
  $("#key-panel").hidden = false;
  $("#key-message").textContent = message;
  $("#api-key").focus();
}

// GET /v2/admin/usage answers both questions: 401 = wrong key, 403 = a tenant's key, 200 = an admin key.
async function signIn(key) {
  let usage = null;
  try {
    usage = await call("v2/admin/usage", { key });
  } catch (err) {
    if (err.code !== "FORBIDDEN") throw err;
  }
  apiKey.set(key);
  document.body.dataset.view = "console";
  $("#key-panel").hidden = true;
  $("#console").hidden = false;
  $("#forget-key").hidden = false;
  $("#admin-panel").hidden = usage === null;
  if (usage) {
    renderUsage(usage);
    showQueues().catch(showError);
  }
  $("#file").focus();
  listNamespaces().catch(showError);
  listBatches().catch(showError);
  showHealth().catch(() => ($("#health").textContent = "health unknown"));
}

async function onKeySubmit() {
  const key = $("#api-key").value.trim();
  $("#key-message").textContent = "Checking…";
  try {
    await signIn(key);
    $("#api-key").value = "";
  } catch (err) {
    $("#key-message").textContent =
      err.status === 401 ? `Key not accepted: ${err.message}` : `Could not check the key: ${err.message}`;
  }
}

// The service's own health, so that a job left queued because no worker runs is explained.
async function showHealth() {
  const h = await health();
  const parts = ["database", "broker"].map((part) => `${part} ${h[part]}`);
  parts.push(`${h.workers} worker${h.workers === 1 ? "" : "s"}`);
  const el = $("#health");
  el.textContent = parts.join(" · ");
  el.classList.toggle("bad", !(h.database === "ok" && h.broker === "ok" && h.workers > 0));
  el.title = h.workers > 0 ? "" : "no worker is consuming: uploads will wait in the queue";
}

// Upload and status -----------------------------------------------------------------------------------

function flags() {
  return [...document.querySelectorAll("#flags input:checked")].map((box) => box.value).join(",");
}

function showFlags() {
  $("#flags-summary").textContent = flags() || "the default (propoints, classifiers)";
}

function setStatus(status, detail = "") {
  const reached = STEPS.indexOf(status);
  document.querySelectorAll("#status-steps li").forEach((li, i) => {
    li.classList.toggle("reached", reached >= 0 && i <= reached);
    if (i === reached) li.setAttribute("aria-current", "step");
    else li.removeAttribute("aria-current");
  });
  const status_ = $("#status");
  status_.dataset.status = status;
  status_.textContent = detail ? `${status}: ${detail}` : status;
}

// `source` is {file} or {url}.
async function analyse(source) {
  const mine = ++generation;
  selected = null;
  $("#result-panel").hidden = true;
  $("#face-panel").hidden = true;
  setStatus("uploading");
  let accepted;
  if (source.file) {
    const form = new FormData();
    form.append("file", source.file, source.file.name || "pasted-image");
    if (flags()) form.append("detection_flags", flags());
    accepted = await call("v2/media/file", { method: "POST", form });
  } else {
    const json = { file_uri: source.url, detection_flags: flags() };
    accepted = await call("v2/media", { method: "POST", json });
  }
  const photo = $("#photo");
  if (photo.src.startsWith("blob:")) URL.revokeObjectURL(photo.src);
  photo.src = source.file ? URL.createObjectURL(source.file) : source.url;
  $("#stage").dataset.mediaUuid = accepted.media_uuid;
  $("#overlay").replaceChildren();
  // "done" is said by showResult, once the faces are drawn (an upload seen before may answer done at once).
  const report = (s) => {
    if (s === "queued") showHealth().catch(() => {});
    if (s !== "done") setStatus(s, accepted.media_uuid);
  };
  report(accepted.status);
  let done;
  try {
    done = await poll(`v2/media/${accepted.media_uuid}`, report, () => mine === generation);
  } catch (err) {
    setStatus("error", err.message);
    throw err;
  }
  if (done) showResult(done);
}

function showResult(answer) {
  const n = answer.faces.length;
  drawFaces($("#overlay"), answer, selectFace);
  $("#result-summary").textContent =
    `${answer.width} × ${answer.height} px · flags ${answer.detection_flags} · ` +
    (n ? "click a face (or Tab to it and press Enter) for its tags." : "no face found.");
  $("#result-panel").hidden = false;
  setStatus("done", `${n} face${n === 1 ? "" : "s"} found`);
}

// Face details, enrol, recognise ----------------------------------------------------------------------

function selectFace(face) {
  selected = face;
  markSelected($("#overlay"), face.face_uuid);
  $("#face-panel").hidden = false;
  $("#face-panel").dataset.faceUuid = face.face_uuid;
  $("#face-uid").textContent = face.face_uuid;
  $("#face-score").textContent = face.detection_score;
  $("#face-person").textContent = face.person_id ?? "—";
  renderTags($("#tags"), face.tags);
  $("#enrol-message").textContent = "";
  $("#recognize-message").textContent = "";
  $("#matches").replaceChildren();
  const crop = $("#face-crop");
  crop.removeAttribute("src");
  faceImage(face.face_uuid)
    .then((url) => selected === face && (crop.src = url))
    .catch(showError);
}

const namespaceOf = (personId) => personId.slice(personId.indexOf("@") + 1);

async function enrol() {
  const face = selected;
  const answer = await call("v2/person", {
    method: "POST",
    json: { faces_uuids: [face.face_uuid], person_id: $("#person-id").value.trim() },
  });
  face.person_id = answer.person_id;
  $("#face-person").textContent = answer.person_id ?? "—";
  $("#enrol-message").textContent = answer.person_id ? `Enrolled as ${answer.person_id}.` : "Unassigned.";
  if (answer.person_id) {
    const ns = namespaceOf(answer.person_id);
    $("#recognize-namespace").value ||= ns;
    $("#persons-namespace").value = ns;
    await Promise.all([listPersons(), listNamespaces()]);
  }
}

function thumbnail(uid, alt) {
  const img = document.createElement("img");
  img.className = "thumb";
  img.alt = alt;
  img.dataset.faceUuid = uid;
  faceImage(uid, 96)
    .then((url) => (img.src = url))
    .catch(() => (img.alt = `${alt} (no image: the original is no longer stored)`));
  return img;
}

let recognitions = 0; // a newer recognition (or face) replaces the one on screen

async function recognize() {
  const face = selected;
  const mine = ++recognitions;
  const ns = $("#recognize-namespace").value.trim();
  const list = $("#matches");
  list.replaceChildren();
  const { recognize_uuid } = await call("v2/recognize", {
    method: "POST",
    json: { faces_uuids: [face.face_uuid], targets: [`all@${ns}`], parameters: "max_results:5" },
  });
  list.dataset.recognizeUuid = recognize_uuid;
  const say = (s) => ($("#recognize-message").textContent = `Recognition ${s}`);
  const current = () => selected === face && mine === recognitions;
  const answer = await poll(`v2/recognize/${recognize_uuid}`, say, current);
  if (!answer) return;
  const matches = answer.results.find((r) => r.face_uuid === face.face_uuid)?.matches ?? [];
  const where = `“${ns || "default"}”`;
  say(matches.length ? `done: ${matches.length} closest in ${where}` : `done: nobody enrolled in ${where}`);
  for (const m of matches) {
    const li = document.createElement("li");
    li.dataset.personId = m.person_id ?? "";
    li.dataset.isMatch = String(m.is_match);
    const text = document.createElement("div");
    const name = document.createElement("strong");
    name.textContent = m.person_id ?? "(face without person)";
    const badge = document.createElement("span");
    badge.className = m.is_match ? "badge match" : "badge";
    badge.textContent = m.is_match ? "match" : "no match";
    const confidence = document.createElement("span");
    confidence.className = "confidence";
    confidence.textContent = `confidence ${(100 * m.confidence).toFixed(1)} %`;
    text.append(name, " ", badge, document.createElement("br"), confidence);
    li.append(thumbnail(m.face_uuid, m.person_id ?? m.face_uuid), text);
    list.append(li);
  }
}

// Batches ---------------------------------------------------------------------------------------------

const BATCHES_EVERY_MS = 2000;
let batchesTimer; // the next refresh, while a batch is unfinished
let batchesAsked = 0; // only the latest listing is drawn (and schedules the next)

function make(tag, content, className = "") {
  const el = document.createElement(tag);
  el.textContent = content;
  if (className) el.className = className;
  return el;
}

// GET /v2/batches: a bar per batch (finished of total: done, error and cancelled), its counts and speed.
async function listBatches() {
  clearTimeout(batchesTimer);
  const mine = ++batchesAsked;
  const { batches } = await call("v2/batches");
  if (mine !== batchesAsked) return;
  const list = $("#batches");
  list.replaceChildren();
  if (!batches.length) list.append(make("li", "No batch yet: uploads with the batch option make one.", "hint"));
  for (const b of batches) {
    const c = b.counts;
    const finished = c.done + c.error + c.cancelled;
    const li = document.createElement("li");
    li.dataset.batch = b.batch;
    li.dataset.drained = String(b.drained);
    const bar = document.createElement("progress");
    bar.max = Math.max(b.total, 1);
    bar.value = finished;
    const percent = b.total ? Math.round((100 * finished) / b.total) : 100;
    bar.textContent = `${percent} %`;
    const head = document.createElement("div");
    head.className = "row spread";
    head.append(make("strong", b.batch), make("span", `${percent} % of ${b.total}`, "hint"));
    if (!b.drained) {
      const cancel = make("button", "Cancel");
      cancel.type = "button";
      cancel.addEventListener(
        "click",
        guarded(async () => {
          await call(`v2/batches/${encodeURIComponent(b.batch)}`, { method: "DELETE" });
          await listBatches();
        }),
      );
      head.append(cancel);
    }
    const counts = ["queued", "processing", "done", "error", "cancelled"].map((s) => `${s} ${c[s]}`);
    const speed = b.images_per_s == null ? "" : ` · ${b.images_per_s} images/s`;
    li.append(head, bar, make("div", `${counts.join(" · ")} · ${b.faces} faces${speed}`, "hint counts"));
    list.append(li);
  }
  if (batches.some((b) => !b.drained)) {
    batchesTimer = setTimeout(() => listBatches().catch(showError), BATCHES_EVERY_MS);
  }
}

// Persons, usage ---------------------------------------------------------------------------------------

// GET /v2/namespaces: buttons to browse each namespace, and suggestions for the namespace fields.
async function listNamespaces() {
  const { namespaces } = await call("v2/namespaces");
  const suggestions = $("#namespace-suggestions");
  const buttons = $("#namespaces");
  suggestions.replaceChildren();
  buttons.replaceChildren();
  for (const { namespace, persons, faces } of namespaces) {
    const option = document.createElement("option");
    option.value = namespace;
    suggestions.append(option);
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.namespace = namespace;
    button.textContent = `${namespace || "(default)"} · ${persons} persons · ${faces} faces`;
    button.addEventListener(
      "click",
      guarded(async () => {
        $("#persons-namespace").value = namespace;
        await listPersons();
      }),
    );
    li.append(button);
    buttons.append(li);
  }
  if (!namespaces.length) buttons.innerHTML = '<li class="hint">No namespace yet: enrol a face to make one.</li>';
}

let personsAsked = 0; // only the latest listing is drawn when two overlap

async function listPersons() {
  const ns = $("#persons-namespace").value.trim();
  const mine = ++personsAsked;
  const { persons } = await call(`v2/person?person_id=${encodeURIComponent(`all@${ns}`)}`);
  if (mine !== personsAsked) return;
  const list = $("#persons");
  list.replaceChildren();
  if (!persons.length) {
    const li = document.createElement("li");
    li.textContent = `Nobody enrolled in “${ns || "default"}” yet.`;
    list.append(li);
  }
  for (const person of persons) {
    const li = document.createElement("li");
    li.dataset.personId = person.person_id;
    const name = document.createElement("strong");
    name.textContent = person.person_id;
    const count = document.createElement("span");
    count.className = "hint";
    count.textContent = ` ${person.faces_uuids.length} face${person.faces_uuids.length === 1 ? "" : "s"}`;
    const thumbs = document.createElement("div");
    thumbs.className = "thumbs";
    thumbs.append(...person.faces_uuids.slice(0, 6).map((uid) => thumbnail(uid, person.person_id)));
    li.append(name, count, thumbs);
    list.append(li);
  }
}

function renderUsage(usage) {
  const body = $("#usage tbody");
  body.replaceChildren();
  for (const [tenant, counts] of Object.entries(usage.tenants)) {
    const tr = document.createElement("tr");
    const images = Object.entries(counts.images).map(([status, n]) => `${status} ${n}`).join(", ");
    for (const text of [tenant, images || "none", counts.faces]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    body.append(tr);
  }
}

// GET /v2/admin/queues: what waits in the broker, and jobs by status in the database.
async function showQueues() {
  const q = await call("v2/admin/queues");
  const body = $("#queues tbody");
  body.replaceChildren();
  for (const [queue, depth] of Object.entries(q.queues ?? {})) {
    const tr = document.createElement("tr");
    tr.dataset.queue = queue;
    tr.append(make("td", queue), make("td", depth));
    body.append(tr);
  }
  if (!q.queues) {
    const tr = document.createElement("tr");
    tr.append(make("td", "broker"), make("td", q.broker));
    body.append(tr);
  }
  const jobs = (counts) => Object.entries(counts).map(([s, n]) => `${s} ${n}`).join(", ") || "none";
  $("#jobs").textContent = `Images: ${jobs(q.images)}. Recognitions: ${jobs(q.recognitions)}.`;
}

// Wiring ----------------------------------------------------------------------------------------------

function imageFrom(dataTransfer) {
  return [...(dataTransfer?.files ?? [])].find((f) => f.type.startsWith("image/"));
}

function wire() {
  $("#flags").append(
    ...FLAGS.map(([flag, what, on]) => {
      const label = document.createElement("label");
      const box = `<input type="checkbox" value="${flag}"${on ? " checked" : ""}>`;
      label.innerHTML = `${box} <code>${flag}</code> <span class="hint">${what}</span>`;
      return label;
    }),
  );
  $("#flags").addEventListener("change", showFlags);
  showFlags();
  $("#key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    onKeySubmit();
  });
  $("#forget-key").addEventListener("click", () => askForKey("Key forgotten."));
  $("#error-close").addEventListener("click", clearError);

  $("#file").addEventListener(
    "change",
    guarded(async () => $("#file").files[0] && analyse({ file: $("#file").files[0] })),
  );
  $("#upload-form").addEventListener(
    "submit",
    guarded(async () => {
      const file = $("#file").files[0];
      const url = $("#image-url").value.trim();
      if (url) return analyse({ url });
      if (file) return analyse({ file });
      throw new ApiError("EMPTY_IMAGE", "choose, drop or paste a photo, or give its URL", 0);
    }),
  );
  const zone = $("#drop-zone");
  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener(
    "drop",
    guarded(async (e) => {
      zone.classList.remove("dragging");
      const file = imageFrom(e.dataTransfer);
      if (file) await analyse({ file });
    }),
  );
  document.addEventListener("paste", (e) => {
    const file = imageFrom(e.clipboardData);
    if (file && !$("#console").hidden) guarded(() => analyse({ file }))(e);
  });

  for (const box of document.querySelectorAll(".toggles input")) {
    const apply = () => $("#stage").classList.toggle(`hide-${box.dataset.layer}`, !box.checked);
    box.addEventListener("change", apply);
    apply();
  }
  $("#photo").addEventListener("error", () => {
    if ($("#photo").getAttribute("src")) {
      showError(new ApiError("IMAGE_NOT_SHOWN", "this browser could not load the photo", 0));
    }
  });
  $("#enrol-form").addEventListener("submit", guarded(enrol));
  $("#recognize-form").addEventListener("submit", guarded(recognize));
  $("#persons-form").addEventListener("submit", guarded(listPersons));
  $("#namespaces-refresh").addEventListener("click", guarded(listNamespaces));
  $("#batches-refresh").addEventListener("click", guarded(listBatches));
  $("#usage-refresh").addEventListener(
    "click",
    guarded(async () => {
      renderUsage(await call("v2/admin/usage"));
      await showQueues();
    }),
  );

  const saved = apiKey.get();
  if (!saved) return askForKey();
  signIn(saved).catch((err) =>
    askForKey(`${err.status === 401 ? "Key not accepted" : "Could not check the key"}: ${err.message}`),
  );
}

wire();
