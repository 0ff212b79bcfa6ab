"""The stats page in a real headless browser, at phone and desktop sizes.

Chromium renders the page after real traffic and a server in each state, and writes
PNG screenshots (to $LBPROXY_SCREENSHOT_DIR when set, else the test's tmp dir) for a
human to look at; the test checks they are real renderings of the requested size.
Skipped when chromium is not installed (`apt-get install -y chromium`).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from tests.harness import get
from tests.integration.test_admin import AUTH, admin_config, call, stats_port

CHROMIUM = next((path for name in ("chromium", "chromium-browser", "google-chrome")
                 if (path := shutil.which(name))), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None,
                                reason="chromium is not installed (apt-get install -y chromium)")


def screenshot(url: str, out: Path, size: tuple[int, int], profile: Path) -> tuple[int, int]:
    """Render `url` into PNG `out`; returns the PNG's width and height."""
    assert CHROMIUM is not None
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={profile}", f"--screenshot={out}",
         f"--window-size={size[0]},{size[1]}", url],
        check=True, capture_output=True, timeout=60)
    header = out.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def test_stats_page_renders_on_phone_and_desktop(backends, proxy, tmp_path):
    apps = backends(4)
    p = proxy(admin_config([a.port for a in apps]))
    for _ in range(40):
        get(p.port, "/")
    get(p.port, "/status/503")
    path = "/api/backends/app/servers"
    assert call(p, "PATCH", f"{path}/app2", {"state": "drain"}).status == 200
    assert call(p, "PATCH", f"{path}/app3", {"state": "maint", "weight": 5}).status == 200
    apps[3].stop()                                        # app4 fails: counted, page shows it
    get(p.port, "/")
    out = Path(os.environ.get("LBPROXY_SCREENSHOT_DIR") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    url = f"http://{AUTH[0]}:{AUTH[1]}@127.0.0.1:{stats_port(p)}/stats"
    for name, size in (("phone", (390, 844)), ("desktop", (1366, 900))):
        png = out / f"lbproxy-stats-{name}.png"
        assert screenshot(url, png, size, tmp_path / f"profile-{name}") == size
        assert png.stat().st_size > 20_000, "a blank page compresses to almost nothing"
