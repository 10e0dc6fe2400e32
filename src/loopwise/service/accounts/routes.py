"""Every account resource's router, in the order the app registers their routes."""

from __future__ import annotations

from fastapi import APIRouter

from loopwise.service.accounts import (
    auth,
    deletion,
    orders,
    overview,
    password_reset,
    preferences,
    users,
    verification,
)

__all__ = ["routers"]

# Users first: GET /users/{id} is the hottest route, and routes are matched in order.
routers: tuple[APIRouter, ...] = (
    users.router,
    auth.router,
    orders.router,
    preferences.router,
    overview.router,
    verification.router,
    password_reset.router,
    deletion.router,
)
