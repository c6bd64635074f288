"""This box's name among several appliances sharing a call log and call admission."""

from __future__ import annotations

from urllib.parse import urlsplit

from appliance.config import Settings


def box_name(settings: Settings) -> str:
    """``box_id`` when set, else the host:port callers reach this box at (unique per box)."""
    return settings.box_id or urlsplit(settings.public_base_url).netloc or settings.host
