"""The web console's files as the api serves them: the page at /, every module it imports, nothing from a CDN.

The console's behaviour is tested in a real browser (tests/integration/test_console.py); this checks the
serving side without one.
"""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from api.app import CONSOLE, create_app


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FACEQUEUE_HOME", str(tmp_path_factory.mktemp("home")))
        return TestClient(create_app())


def test_page_at_root_with_the_key_field(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<label for="api-key">API key</label>' in page.text
    assert re.search(r'<input id="file" name="file" type="file"', page.text)
    assert "/" not in client.get("/openapi.json").json()["paths"], "the page is not part of the API"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


def test_every_asset_and_module_import_is_served_with_its_type(client: TestClient) -> None:
    page = client.get("/").text
    wanted = set(re.findall(r'(?:href|src)="(console/[^"]+)"', page))
    assert {"console/app.js", "console/style.css"} <= wanted
    for script in CONSOLE.glob("*.js"):
        wanted |= {f"console/{name}" for name in re.findall(r'from "\./([\w.]+)"', script.read_text())}
    types = {".js": "javascript", ".css": "text/css"}  # a module served with another type is refused
    for path in sorted(wanted):
        response = client.get("/" + path)
        assert response.status_code == 200, path
        assert types[path[path.rindex(".") :]] in response.headers["content-type"], path


def test_nothing_is_fetched_from_elsewhere() -> None:
    for asset in CONSOLE.iterdir():
        text = asset.read_text()
        assert not re.search(r"""(src|href|from|import|url)\s*[=(]?\s*["']?(https?:)?//""", text), asset.name


def test_unknown_paths_still_answer_the_api_error(client: TestClient) -> None:
    for path in ("/console/missing.js", "/v2/nothing-here"):
        response = client.get(path)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "NOT_FOUND"
