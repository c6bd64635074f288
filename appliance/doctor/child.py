"""Child-process entry: ``python -m appliance.doctor.child CHECK`` with Settings JSON on stdin.

The last stdout line is the JSON result; exit 0 on success, 1 on a failure it could report.
Settings travel on stdin, not argv or the environment, so secrets stay out of ``ps``.
"""

from __future__ import annotations

import logging
import sys

import msgspec

from appliance.config import Settings
from appliance.doctor.checks import CHECKS


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    settings = msgspec.json.decode(sys.stdin.buffer.read(), type=Settings)
    try:
        detail, device = CHECKS[sys.argv[1]](settings)
    except Exception as err:  # the whole point: any failure becomes a report
        print(msgspec.json.encode({"error": f"{type(err).__name__}: {err}"}).decode())
        return 1
    print(msgspec.json.encode({"detail": detail, "device": device}).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
