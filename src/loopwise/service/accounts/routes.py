"""One router for every account resource, so the app mounts them in one line."""

from __future__ import annotations

from fastapi import APIRouter

from loopwise.service.accounts import auth, orders, overview, preferences, users

__all__ = ["router"]

router = APIRouter()
for _resource in (auth, users, orders, preferences, overview):
    router.include_router(_resource.router)
