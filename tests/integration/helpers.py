"""Small local HTTP servers for URL-upload and callback tests, bound to 127.0.0.2 (never anything else)."""

from __future__ import annotations

import contextlib
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image

from tests.photos import astronaut, encode

FACE_JPEG = encode(astronaut())  # one public-domain face, always available


def tiny_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 100, 50)).save(buffer, "PNG")
    return buffer.getvalue()


class LocalServer:
    """Routes: /image.jpg, /slow, /huge, /text, /missing (404), /redirect-private, /callback (records JSON),
    /callback-hang-first (records, answers the first POST only after `hang_s`), /callback-fail (500).
    `keys` records the Idempotency-Key header of every callback POST."""

    def __init__(self, image: bytes, hang_s: float = 30) -> None:
        self.received: list[dict] = []
        self.paths: list[str] = []  # of every POST, in order
        self.keys: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, body: bytes, content_type: str = "image/jpeg") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path == "/image.jpg":
                    self._send(200, image)
                elif self.path == "/slow":
                    time.sleep(5)
                    self._send(200, image)
                elif self.path == "/huge":
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.end_headers()  # no Content-Length: the limit must hold while streaming
                    try:
                        for _ in range(200):
                            self.wfile.write(b"\0" * 65536)
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                elif self.path == "/text":
                    self._send(200, b"<html>not an image</html>", "text/html")
                elif self.path == "/redirect-private":
                    self.send_response(302)
                    self.send_header("Location", "http://127.0.0.1:9/image.jpg")
                    self.end_headers()
                else:
                    self._send(404, b"missing", "text/plain")

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server.keys.append(self.headers.get("Idempotency-Key"))
                server.paths.append(self.path)
                if self.path.split("?")[0] == "/callback":
                    server.received.append(json.loads(body))
                    self._send(200, b"ok", "text/plain")
                elif self.path == "/callback-hang-first":
                    server.received.append(json.loads(body))
                    if len(server.received) == 1:
                        time.sleep(hang_s)  # the sender is killed meanwhile
                    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                        self._send(200, b"ok", "text/plain")
                else:
                    server.received.append({"failed": True})
                    self._send(500, b"no", "text/plain")

        self.httpd = ThreadingHTTPServer(("127.0.0.2", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.2:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
