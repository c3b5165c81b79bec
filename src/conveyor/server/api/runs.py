"""/api/runs (docs/server-api.md)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["runs"])
