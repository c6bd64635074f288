"""Which package may import which: the composition root on top, core never reaching for the
wire or the concrete call log, engines never reaching for the orchestration."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "appliance"

# package → module prefixes it must not import
FORBIDDEN = {
    "appliance.core": ("appliance.telephony", "appliance.web", "appliance.store.calls",
                       "appliance.wiring", "appliance.caller", "appliance.bench",
                       "appliance.cli", "appliance.recordings"),
    # engines may use the μ-law codec helpers in core.audio, nothing of the call logic
    "appliance.engines": ("appliance.core.agent", "appliance.core.session",
                          "appliance.core.relay_session", "appliance.core.recorder",
                          "appliance.wiring", "appliance.web"),
    "appliance.telephony": ("appliance.core", "appliance.web", "appliance.engines"),
    "appliance.store": ("appliance.core", "appliance.web", "appliance.engines",
                        "appliance.recordings"),
    # files on disk: the audio constants and the sid format, nothing of the call or the wire
    "appliance.recordings": ("appliance.core.session", "appliance.core.recorder",
                             "appliance.web", "appliance.console", "appliance.store",
                             "appliance.engines", "appliance.wiring", "appliance.cli"),
}


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_downwards(package: str) -> None:
    folder = ROOT / package.removeprefix("appliance.").replace(".", "/")
    wrong = sorted(f"{path.relative_to(ROOT.parent)} imports {name}"
                   for path in folder.rglob("*.py") for name in imports(path)
                   if name.startswith(FORBIDDEN[package]))
    assert not wrong, wrong
