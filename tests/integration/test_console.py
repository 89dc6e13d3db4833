"""The web console in a real headless Chromium, against the real api (uvicorn over HTTP), Postgres, Redis
and a Celery worker: key, upload, live status, boxes where the API puts them, tags, enrol, recognise.

Screenshots of each step go to $FACEQUEUE_TEST_OUTPUT/console (or the test's temporary folder).
Needs Debian's `chromium` and `chromium-driver` (`make system-deps` installs them).
"""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from tests import photos
from tests.integration.conftest import make_key

CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
FIVE_POINTS = {512, 768, 5505024, 2048, 2304}  # Betaface ids of the detector's 5 points
DENSE_SHOWN = "return getComputedStyle(document.querySelector('.dense')).display !== 'none'"
# A file dropped on the drop zone, or pasted into the page, as a user's browser delivers it.
DISPATCH_FILE = """
    const [kind, b64] = arguments;  // the photo, as base64
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const data = new DataTransfer();
    data.items.add(new File([bytes], 'photo.jpg', {type: 'image/jpeg'}));
    const event = kind === 'drop'
        ? new DragEvent('drop', {dataTransfer: data, bubbles: true, cancelable: true})
        : new ClipboardEvent('paste', {clipboardData: data, bubbles: true, cancelable: true});
    (kind === 'drop' ? document.querySelector('#drop-zone') : document.body).dispatchEvent(event);
"""
LAPTOP, PHONE = (1280, 900), (390, 844)
TOLERANCE_PX = 2.5

pytestmark = [
    pytest.mark.integration,
    pytest.mark.models,
    pytest.mark.skipif(
        not CHROMEDRIVER.exists(),
        reason="needs Debian's chromium and chromium-driver (`make system-deps` installs them)",
    ),
]


@pytest.fixture(scope="module")
def live(live_server: str, workers) -> str:  # type: ignore[no-untyped-def]
    """The api over real HTTP (conftest's live_server), with a worker processing the jobs."""
    workers.ensure()
    return f"http://{live_server}/"


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    os.environ["SE_OFFLINE"] = "true"  # selenium must never try to download a driver
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # to find script errors
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_window_size(*LAPTOP)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = os.environ.get("FACEQUEUE_TEST_OUTPUT")
    folder = (Path(base) if base else tmp_path_factory.mktemp("output")) / "console"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Page:
    """Small helpers over the driver: find, wait, read rectangles, take numbered screenshots."""

    def __init__(self, driver: webdriver.Chrome, output: Path, story: str) -> None:
        self.driver, self.output, self.story, self.shots = driver, output, story, 0

    def find(self, css: str):  # type: ignore[no-untyped-def]
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str) -> list:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def wait(self, condition, timeout: float = 30, message: str = ""):  # type: ignore[no-untyped-def]
        try:
            # A list being redrawn may drop an element between finding and reading it: look again.
            wait = WebDriverWait(
                self.driver, timeout, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException]
            )
            return wait.until(lambda _: condition())
        except TimeoutException:
            self.shot("timeout")
            state = self.js(
                "return ['error', 'status', 'enrol-message', 'recognize-message', 'persons', 'matches']"
                ".map(id => id + ': ' + (document.getElementById(id)?.innerText ?? '').slice(0, 300))"
            )
            raise AssertionError(f"timed out waiting for {message or 'a condition'}; page: {state}") from None

    def js(self, script: str, *args: object):  # type: ignore[no-untyped-def]
        return self.driver.execute_script(script, *args)

    def rect(self, element) -> tuple[float, float, float, float]:  # type: ignore[no-untyped-def]
        return tuple(
            self.js(
                "const r = arguments[0].getBoundingClientRect(); return [r.left, r.top, r.width, r.height]",
                element,
            )
        )

    def shot(self, name: str) -> Path:
        self.shots += 1
        path = self.output / f"{self.story}-{self.shots:02d}-{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def type_into(self, css: str, text: str, enter: bool = True) -> None:
        field = self.find(css)
        field.clear()
        field.send_keys(text + (Keys.ENTER if enter else ""))

    def loaded(self, css: str) -> bool:
        """Images matching css exist and have all loaded (one script: lists may be redrawn meanwhile)."""
        return self.js(
            "const images = [...document.querySelectorAll(arguments[0])];"
            "return images.length > 0 && images.every((img) => img.naturalWidth > 0)",
            css,
        )

    def watch_status(self) -> None:
        """Record every status the page shows, so the live updates can be checked afterwards."""
        self.js("""
            window.statusLog = [];
            const el = document.querySelector('#status');
            new MutationObserver(() => {
                const s = el.dataset.status;
                if (window.statusLog.at(-1) !== s) window.statusLog.push(s);
            }).observe(el, {attributes: true, childList: true, characterData: true, subtree: true});
        """)

    def wait_done(self) -> list[str]:
        self.wait(
            lambda: self.js("return window.statusLog.some(s => s === 'done' || s === 'error')"), 90, "job"
        )
        assert self.find("#status").get_attribute("data-status") == "done", self.find("#status").text
        return self.js("return window.statusLog")


def api_get(live: str, key: str, path: str) -> dict:
    response = httpx.get(live + path, headers={"X-API-Key": key}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def check_boxes(page: Page, media: dict) -> None:
    """Every face of the API's answer has one drawn box covering its box, scaled to the displayed photo."""
    photo = page.find("#photo")
    natural = page.js("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", photo)
    assert natural == [media["width"], media["height"]]
    left, top, width, height = page.rect(photo)
    assert width > 0 and abs(width / height - media["width"] / media["height"]) < 0.01, "aspect ratio kept"
    sx, sy = width / media["width"], height / media["height"]
    boxes = {
        b.get_attribute("data-face-uuid"): b for b in page.all("[data-face-uuid]") if b.tag_name == "button"
    }
    assert sorted(boxes) == sorted(f["face_uuid"] for f in media["faces"])
    for face in media["faces"]:
        expected = (
            left + (face["x"] - face["width"] / 2) * sx,
            top + (face["y"] - face["height"] / 2) * sy,
            face["width"] * sx,
            face["height"] * sy,
        )
        drawn = page.rect(boxes[face["face_uuid"]])
        assert np.allclose(drawn, expected, atol=TOLERANCE_PX), (face["face_uuid"], drawn, expected)


def test_wrong_key_is_refused_with_a_clear_message(live, browser, output) -> None:  # type: ignore[no-untyped-def]
    page = Page(browser, output, "wrong-key")
    browser.get(live)
    page.wait(lambda: page.find("#api-key").is_displayed())
    page.type_into("#api-key", "not-a-key")
    page.wait(lambda: "Key not accepted" in page.find("#key-message").text)
    assert "UNAUTHORIZED" in page.find("#key-message").text
    assert not page.find("#console").is_displayed()
    page.shot("wrong-key")


def test_console_upload_tags_enrol_recognise(live, browser, output, api_key) -> None:  # type: ignore[no-untyped-def]
    page = Page(browser, output, "story")
    browser.get(live)
    page.wait(lambda: page.find("#api-key").is_displayed())
    page.shot("key")
    page.type_into("#api-key", api_key)  # Enter submits
    page.wait(lambda: page.find("#file").is_displayed(), message="console after the key")
    assert not page.find("#admin-panel").is_displayed(), "a tenant key sees no admin panel"
    page.wait(lambda: "database ok · broker ok" in page.find("#health").text, message="the service's health")

    # Upload the group photo with the file picker: choosing the file starts the analysis.
    group = output / "group.jpg"
    group.write_bytes(photos.encode(photos.group()))
    page.watch_status()
    page.find("#file").send_keys(str(group))
    page.wait(lambda: page.find("#status").get_attribute("data-status") in ("queued", "processing", "done"))
    page.shot("status")
    log = page.wait_done()
    assert log[:2] == ["uploading", "queued"] and log[-1] == "done", log
    # (A job may go back to queued once: the harness's 6 s lease can expire while a busy machine loads models.)
    assert set(log) <= {"uploading", "queued", "processing", "done"}, log

    first_media_uuid = page.find("#stage").get_attribute("data-media-uuid")
    media = api_get(live, api_key, "v2/media/" + first_media_uuid)
    assert len(media["faces"]) == 2, "astronaut and Hopper"
    page.wait(lambda: page.loaded("#photo"))
    check_boxes(page, media)
    page.shot("result")

    # Click the astronaut (left); her tags appear as the API sent them, with her crop.
    astronaut, hopper = sorted(media["faces"], key=lambda f: f["x"])
    page.find(f'button[data-face-uuid="{astronaut["face_uuid"]}"]').click()
    page.wait(lambda: page.find("#face-panel").get_attribute("data-face-uuid") == astronaut["face_uuid"])
    shown = {
        row.get_attribute("data-tag"): row.find_elements(By.TAG_NAME, "td")[0].text
        for row in page.all("#tags tr[data-tag]")
    }
    assert {"age", "gender", "expression", "yaw", "quality"} <= set(shown)
    assert shown == {t["name"]: t["value"] for t in astronaut["tags"]}
    # The expression's 7 probabilities: a bar each, under the expression, at the API's values.
    emotions = {t["name"]: t["confidence"] for t in astronaut["tags"] if t["name"].startswith("emotion ")}
    bars = page.js(
        "return [...document.querySelectorAll('#tags tr.emotion')].map(tr => [tr.dataset.tag,"
        " tr.querySelector('meter').value, tr.previousElementSibling.dataset.tag])"
    )
    assert len(emotions) == 7 and {tag: value for tag, value, _ in bars} == pytest.approx(emotions)
    assert bars[0][2] == "expression", "the bars follow the expression row"
    page.wait(lambda: page.loaded("#face-crop"), message="face crop")
    page.shot("face-tags")

    # The dense points appear when their toggle is ticked: one dot per point the API sent beyond the 5.
    dense = sum(p["type"] not in FIVE_POINTS for f in media["faces"] for p in f["points"])
    assert dense > 0 and page.js(DENSE_SHOWN) is False
    page.find('.toggles input[data-layer="dense"]').click()
    assert page.js(DENSE_SHOWN) is True and len(page.all(".dense circle")) == dense
    # The result view, as the README shows it.
    page.js("document.querySelector('#result-panel').scrollIntoView()")
    shutil.copyfile(page.shot("result-dense"), page.output / "console.png")

    # The same drawing at a phone's width.
    browser.set_window_size(*PHONE)
    page.wait(lambda: page.rect(page.find("#photo"))[2] < PHONE[0])
    check_boxes(page, media)
    overflow = page.js("""
        return [...document.querySelectorAll('body *')]
            .filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
            .map(e => e.tagName + '#' + e.id + '.' + e.className);
    """)
    assert not overflow, f"wider than a phone: {overflow}"
    page.js("document.querySelector('#result-panel').scrollIntoView()")
    page.shot("phone")
    browser.set_window_size(*LAPTOP)
    page.wait(lambda: page.rect(page.find("#photo"))[2] > PHONE[0])

    # A bad person id: the API's code and message, shown as such.
    page.type_into("#person-id", "bad!@console")
    page.wait(lambda: page.find("#error").is_displayed())
    assert page.find("#error-text").text.startswith("INVALID_PERSON_ID: ")
    page.shot("api-error")
    page.find("#error-close").click()

    # Enrol both faces; the persons panel lists them with thumbnails.
    page.type_into("#person-id", "Eileen Collins@console")
    page.wait(lambda: "Enrolled as Eileen Collins@console" in page.find("#enrol-message").text)
    # Faces are buttons: Enter on a focused box selects it as a click does.
    page.find(f'button[data-face-uuid="{hopper["face_uuid"]}"]').send_keys(Keys.ENTER)
    page.wait(lambda: page.find("#face-panel").get_attribute("data-face-uuid") == hopper["face_uuid"])
    page.type_into("#person-id", "Grace Hopper@console")
    page.wait(lambda: "Enrolled as Grace Hopper@console" in page.find("#enrol-message").text)
    page.wait(
        lambda: len(page.all("#persons li[data-person-id]")) == 2 and page.loaded("#persons img"),
        message="two persons with thumbnails",
    )
    # The namespace is listed with its counts (GET /v2/namespaces); its button lists its persons.
    page.wait(
        lambda: "2 persons · 2 faces" in page.find('#namespaces button[data-namespace="console"]').text,
        message="the console namespace with its counts",
    )
    page.find("#persons-namespace").clear()
    page.find('#namespaces button[data-namespace="console"]').click()
    page.wait(lambda: page.find("#persons-namespace").get_attribute("value") == "console")
    page.wait(lambda: len(page.all("#persons li[data-person-id]")) == 2 and page.loaded("#persons img"))
    persons = api_get(live, api_key, "v2/person?person_id=all@console")["persons"]
    assert {p["person_id"]: p["faces_uuids"] for p in persons} == {
        "Eileen Collins@console": [astronaut["face_uuid"]],
        "Grace Hopper@console": [hopper["face_uuid"]],
    }
    page.js("document.querySelector('#persons').scrollIntoView({block: 'end'})")
    page.shot("enrolled")

    # Another photo of Hopper (mirrored, smaller), dropped on the drop zone with the `extended` flag ticked
    # too; her colours appear as swatches; recognise her.
    page.find("details.flags summary").click()
    page.find('#flags input[value="extended"]').click()
    assert page.find("#flags-summary").text == "propoints,classifiers,extended"
    other = photos.encode(np.ascontiguousarray(photos.hopper()[::2, ::-2]))
    page.watch_status()
    page.js(DISPATCH_FILE, "drop", base64.b64encode(other).decode())
    page.wait_done()
    media = api_get(live, api_key, "v2/media/" + page.find("#stage").get_attribute("data-media-uuid"))
    (face,) = media["faces"]
    assert "extended" in media["detection_flags"]
    page.wait(lambda: page.loaded("#photo"))
    check_boxes(page, media)
    page.find(f'button[data-face-uuid="{face["face_uuid"]}"]').click()
    skin = next(t["value"] for t in face["tags"] if t["name"] == "color skin")
    swatch = page.find('#tags tr[data-tag="color skin"] .swatch')
    rgb = tuple(int(skin[i : i + 2], 16) for i in (0, 2, 4))
    assert page.js("return getComputedStyle(arguments[0]).backgroundColor", swatch) == f"rgb{rgb}"
    page.js("arguments[0].scrollIntoView({block: 'center'})", swatch)
    page.shot("colours")
    page.type_into("#recognize-namespace", "console")
    page.wait(lambda: len(page.all("#matches li")) == 2 and page.loaded("#matches img"), 60, "matches")
    shown = [
        (li.get_attribute("data-person-id"), li.get_attribute("data-is-match"))
        for li in page.all("#matches li")
    ]
    assert shown[0] == ("Grace Hopper@console", "true"), shown
    answer = api_get(
        live, api_key, "v2/recognize/" + page.find("#matches").get_attribute("data-recognize-uuid")
    )
    expected = [(m["person_id"], str(m["is_match"]).lower()) for m in answer["results"][0]["matches"]]
    assert shown == expected
    page.js("document.querySelector('#matches').scrollIntoView({block: 'end'})")
    page.shot("recognised")

    # Paste: the group photo again, with the first flags, is the same job (same bytes, same flags).
    page.find('#flags input[value="extended"]').click()
    page.watch_status()
    page.js(DISPATCH_FILE, "paste", base64.b64encode(group.read_bytes()).decode())
    page.wait_done()
    assert page.find("#stage").get_attribute("data-media-uuid") == first_media_uuid
    assert len(page.all("button[data-face-uuid]")) == 2

    # A URL with the visible Upload button: this one is refused by the api at once, and the page says why.
    page.type_into("#image-url", "http://127.0.0.1:9/photo.jpg", enter=False)
    page.find("#upload").click()
    page.wait(lambda: page.find("#error").is_displayed(), message="the URL refusal")
    assert page.find("#error-text").text.startswith("URL_FORBIDDEN: ")

    # No script failed, nothing was blocked by the page's policy (refused API requests are logged too: not counted).
    uncaught = [
        e["message"]
        for e in browser.get_log("browser")
        if "Uncaught" in e["message"] or "Content Security Policy" in e["message"]
    ]
    assert not uncaught, uncaught


def test_admin_key_sees_usage(live, browser, output, api_key) -> None:  # type: ignore[no-untyped-def]
    page = Page(browser, output, "admin")
    browser.get(live)
    # The tab still holds the tenant's key from the test before: the page signs in by itself; forget it.
    page.wait(lambda: page.find("body").get_attribute("data-view") in ("key", "console"))
    if page.find("body").get_attribute("data-view") == "console":
        page.find("#forget-key").click()
    admin = make_key("console-admin", admin=True)
    page.type_into("#api-key", admin)
    page.wait(lambda: page.find("#admin-panel").is_displayed(), message="admin panel")
    rows = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")] for tr in page.all("#usage tbody tr")]
    usage = httpx.get(live + "v2/admin/usage", headers={"X-API-Key": api_key}).json()
    assert usage["error"]["code"] == "FORBIDDEN"
    assert any(row[0] == "tenant-a" and row[2] != "0" for row in rows), rows
    # Queue depths (GET /v2/admin/queues): each broker queue with its depth, jobs by status.
    page.wait(lambda: page.all("#queues tbody tr"), message="queue depths")
    queues = httpx.get(live + "v2/admin/queues", headers={"X-API-Key": admin})
    assert queues.status_code == 200 and queues.json()["broker"] == "ok", queues.text
    shown = {
        tr.get_attribute("data-queue"): tr.find_elements(By.TAG_NAME, "td")[1].text
        for tr in page.all("#queues tbody tr")
    }
    assert set(shown) == set(queues.json()["queues"]) and all(v.isdigit() for v in shown.values()), shown
    assert "done" in page.find("#jobs").text
    refused = httpx.get(live + "v2/admin/queues", headers={"X-API-Key": api_key})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "FORBIDDEN"
    page.js("document.querySelector('#admin-panel').scrollIntoView()")
    page.shot("admin")


def sign_in(page: Page, live: str, key: str) -> None:
    """Open the console with this key (forgetting one the tab still holds from a test before)."""
    page.driver.get(live)
    page.wait(lambda: page.find("body").get_attribute("data-view") in ("key", "console"))
    if page.find("body").get_attribute("data-view") == "console":
        page.find("#forget-key").click()
    page.type_into("#api-key", key)
    page.wait(lambda: page.find("#file").is_displayed(), message="console after the key")


def batch_row(page: Page, name: str) -> dict:
    return page.js(
        "const li = document.querySelector(`#batches li[data-batch='${arguments[0]}']`);"
        "return li && {drained: li.dataset.drained, value: li.querySelector('progress').value,"
        " max: li.querySelector('progress').max, counts: li.querySelector('.counts').textContent,"
        " cancel: !!li.querySelector('button')}",
        name,
    )


def test_batches_progress_and_cancel(live, browser, output, workers) -> None:  # type: ignore[no-untyped-def]
    page = Page(browser, output, "batches")
    key = make_key("console-batches")
    sign_in(page, live, key)
    page.wait(lambda: "No batch yet" in page.find("#batches").text, message="no batch yet")

    def upload(image: np.ndarray, batch: str, flags: str) -> None:
        body = {"file_base64": base64.b64encode(photos.encode(image)).decode(), "batch": batch}
        response = httpx.post(
            live + "v2/media", json={**body, "detection_flags": flags}, headers={"X-API-Key": key}
        )
        assert response.status_code in (200, 202), response.text

    # Three photos (two faces, and a cat): the bar reaches 100 % with the API's counts; the page refreshes by itself.
    for image in (photos.astronaut(), photos.hopper(), photos.cat()):
        upload(image, "console run", "basic")
    page.find("#batches-refresh").click()
    page.wait(
        lambda: (batch_row(page, "console run") or {}).get("drained") == "true", 90, "the batch to finish"
    )
    row = batch_row(page, "console run")
    summary = api_get(live, key, "v2/batches/console run")
    assert row["value"] == row["max"] == summary["total"] == 3 and not row["cancel"], row
    counts = summary["counts"]
    assert counts["done"] == 3 and summary["faces"] == 2, summary
    expected = " · ".join(f"{s} {counts[s]}" for s in ("queued", "processing", "done", "error", "cancelled"))
    assert row["counts"].startswith(f"{expected} · 2 faces · {summary['images_per_s']} images/s"), row
    listed = api_get(live, key, "v2/batches")
    assert [b["batch"] for b in listed["batches"]] == ["console run"] and listed["batches"][0] == summary
    page.shot("done")

    # A longer batch, cancelled from the page before it runs: what was still queued ends cancelled. The
    # worker is stopped meanwhile, so the photos are surely still queued when Cancel is clicked (a fast
    # worker once finished all 30 first).
    workers.stop_all()
    for i in range(30):
        upload(
            np.ascontiguousarray(photos.astronaut()[4 * i :, 4 * i :]),
            "console cancel",
            "propoints,classifiers",
        )
    page.find("#batches-refresh").click()
    page.wait(lambda: (batch_row(page, "console cancel") or {}).get("cancel"), message="the Cancel button")
    page.find("#batches li[data-batch='console cancel'] button").click()
    page.wait(
        lambda: (batch_row(page, "console cancel") or {}).get("drained") == "true", 90, "the cancelled batch"
    )
    summary = api_get(live, key, "v2/batches/console cancel")
    assert summary["counts"]["cancelled"] == 30 and summary["drained"], summary
    workers.ensure()
    row = batch_row(page, "console cancel")
    assert row["value"] == row["max"] == summary["total"] == 30, row
    assert f"cancelled {summary['counts']['cancelled']}" in row["counts"], row
    listed = api_get(live, key, "v2/batches?limit=1")
    assert [b["batch"] for b in listed["batches"]] == ["console cancel"] and listed["next_cursor"], listed
    older = api_get(live, key, f"v2/batches?limit=1&cursor={listed['next_cursor']}")
    assert [b["batch"] for b in older["batches"]] == ["console run"], older
    page.shot("cancelled")
