// The result drawn over the photo. Every position is a percentage of the image size the API reports
// (pixels after EXIF orientation, as the browser shows them), so the drawing follows the photo at any
// displayed size without being redrawn.

// Betaface type ids of the detector's 5 points: eyes, nose tip, mouth corners.
const FIVE_POINTS = new Set([512, 768, 5505024, 2048, 2304]);
const SVG = "http://www.w3.org/2000/svg";

const pct = (value, total) => `${(100 * value) / total}%`;

function box(face, index, media) {
  const el = document.createElement("button");
  el.type = "button";
  el.className = "face-box";
  el.dataset.faceUuid = face.face_uuid;
  // x, y are the centre of the box.
  el.style.left = pct(face.x - face.width / 2, media.width);
  el.style.top = pct(face.y - face.height / 2, media.height);
  el.style.width = pct(face.width, media.width);
  el.style.height = pct(face.height, media.height);
  // Labels grow away from the photo's edges, so they stay on the photo at any width.
  el.classList.toggle("label-end", face.x > media.width / 2);
  el.classList.toggle("label-below", face.y - face.height / 2 < media.height * 0.08);
  el.setAttribute("aria-pressed", "false");
  el.setAttribute("aria-label", `Face ${index + 1}, score ${face.detection_score}`);
  const label = document.createElement("span");
  label.className = "face-label";
  label.textContent = `${index + 1} · ${face.face_uuid.slice(0, 8)} · ${face.detection_score.toFixed(2)}`;
  el.append(label);
  return el;
}

function points(faces, media) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "points");
  svg.setAttribute("viewBox", `0 0 ${media.width} ${media.height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("aria-hidden", "true");
  const five = document.createElementNS(SVG, "g");
  five.setAttribute("class", "five");
  const dense = document.createElementNS(SVG, "g");
  dense.setAttribute("class", "dense");
  for (const face of faces) {
    // Sized from the face, with a floor from the photo, so the dots stay visible at any scale.
    const unit = Math.max(Math.max(face.width, face.height) / 100, media.width / 800);
    for (const p of face.points ?? []) {
      const dot = document.createElementNS(SVG, "circle");
      const isFive = FIVE_POINTS.has(p.type);
      dot.setAttribute("cx", p.x);
      dot.setAttribute("cy", p.y);
      dot.setAttribute("r", (isFive ? 2.2 : 1.1) * unit);
      const title = document.createElementNS(SVG, "title");
      title.textContent = p.name;
      dot.append(title);
      (isFive ? five : dense).append(dot);
    }
  }
  svg.append(dense, five);
  return svg;
}

// Draw the faces of a media answer into `overlay`; `onSelect(face)` runs when a box is clicked.
export function drawFaces(overlay, media, onSelect) {
  overlay.replaceChildren();
  overlay.append(points(media.faces, media));
  media.faces.forEach((face, index) => {
    const el = box(face, index, media);
    el.addEventListener("click", () => onSelect(face));
    overlay.append(el);
  });
}

export function markSelected(overlay, uid) {
  for (const el of overlay.querySelectorAll("[data-face-uuid]")) {
    const selected = el.dataset.faceUuid === uid;
    el.classList.toggle("selected", selected);
    el.setAttribute("aria-pressed", String(selected));
  }
}
