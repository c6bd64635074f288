"""``python -m tests.web.fake_box SETTINGS.json``: a box with the scripted fake engines in a
process of its own, for the tests that kill one outright (SIGKILL) as a crash would."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import msgspec
import uvicorn

from appliance.cli.serve_cmd import uvicorn_options
from appliance.config import Settings
from appliance.web.app import create_app
from tests.web.fake_engines import FakeSet


def main(path: str) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = msgspec.json.decode(Path(path).read_bytes(), type=Settings)
    app = create_app(settings, FakeSet().load)
    uvicorn.run(app, **(uvicorn_options(settings) | {"host": "127.0.0.1"}))


if __name__ == "__main__":
    main(sys.argv[1])
