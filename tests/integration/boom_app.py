"""The real app plus two test routes, served by a real uvicorn in test_hostile: /boom raises an unexpected
error (a bug), /peer answers the client's port (to prove a keep-alive connection survived the error)."""

from __future__ import annotations

from fastapi import FastAPI, Request

from api.app import create_app


def create() -> FastAPI:
    app = create_app()

    @app.get("/boom")
    def boom() -> dict:
        raise RuntimeError("a bug")

    @app.get("/peer")
    def peer(request: Request) -> dict:
        return {"port": request.client.port if request.client else None}

    return app
