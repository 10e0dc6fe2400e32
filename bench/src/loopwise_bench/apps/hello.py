"""A bare FastAPI hello-world: the framework's own cost, with nothing of ours in it."""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel

__all__ = ["create_app"]


class Message(BaseModel):
    message: str


def create_app() -> FastAPI:
    app = FastAPI()

    @app.get("/hello")
    async def hello() -> Message:
        return Message(message="hello")

    @app.get("/healthz")
    async def healthz() -> Message:
        return Message(message="ok")

    return app
