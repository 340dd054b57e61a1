"""The timers page at `/ui` (filled in separately)."""

from fastapi import APIRouter

router = APIRouter()
