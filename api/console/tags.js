// A face's tags as a readable table, grouped; colours as swatches. Only the tags the API sent are shown.

const GROUPS = [
  ["Age and gender", (n) => n === "age" || n === "gender"],
  [
    "Expression",
    (n) => ["expression", "smile", "mouth open", "mouth opening"].includes(n) || /^(eye_|emotion )/.test(n),
  ],
  ["Pose", (n) => ["yaw", "pitch", "roll"].includes(n)],
  [
    "Quality",
    (n) => /^(blur|exposure|noise)( value)?$/.test(n) || ["quality", "face_size", "inter_pupil_distance"].includes(n),
  ],
  ["Liveness", (n) => n === "liveness"],
  ["Colours", (n) => n.startsWith("color ")],
  ["Measurements", () => true], // the extended measurements, and anything newer than this page
];

const EMOTION = "emotion ";

function valueCell(tag) {
  const cell = document.createElement("td");
  if (tag.name.startsWith(EMOTION)) {
    // One of the expression's seven probabilities (they follow the expression tag): a small bar.
    const bar = document.createElement("meter");
    bar.min = 0;
    bar.max = 1;
    bar.value = Number(tag.confidence);
    bar.title = `${tag.name.slice(EMOTION.length)} ${tag.value}`;
    cell.append(bar, ` ${tag.value}`);
  } else if (tag.name.startsWith("color ") && /^[0-9a-f]{6}$/i.test(tag.value)) {
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = `#${tag.value}`;
    cell.append(swatch, `#${tag.value}`);
  } else {
    cell.textContent = tag.value;
  }
  return cell;
}

function row(tag) {
  const tr = document.createElement("tr");
  tr.dataset.tag = tag.name;
  const name = document.createElement("th");
  name.scope = "row";
  const emotion = tag.name.startsWith(EMOTION);
  if (emotion) tr.className = "emotion";
  name.textContent = emotion ? tag.name.slice(EMOTION.length) : tag.name;
  const confidence = document.createElement("td");
  confidence.textContent = tag.confidence == null ? "" : Number(tag.confidence).toFixed(3);
  tr.append(name, valueCell(tag), confidence);
  return tr;
}

// Replace the table's bodies with one <tbody> per group that has tags.
export function renderTags(table, tags) {
  for (const body of table.querySelectorAll("tbody")) body.remove();
  const left = [...(tags ?? [])];
  for (const [title, belongs] of GROUPS) {
    const mine = left.filter((t) => belongs(t.name));
    if (!mine.length) continue;
    for (const t of mine) left.splice(left.indexOf(t), 1);
    const body = document.createElement("tbody");
    const head = document.createElement("tr");
    head.className = "group";
    const th = document.createElement("th");
    th.colSpan = 3;
    th.scope = "rowgroup";
    th.textContent = title;
    head.append(th);
    body.append(head, ...mine.map(row));
    table.append(body);
  }
  if (!tags?.length) {
    const body = document.createElement("tbody");
    body.innerHTML = '<tr><td colspan="3">No tags: the flags of this upload asked for none.</td></tr>';
    table.append(body);
  }
}
