"""The front-end assets: each CDN URL is pinned to the version vendored in static/vendor, and its integrity hash is
that vendored file's (the same npm file), so the browser runs the CDN copy only when it is byte for byte the same."""

from __future__ import annotations

import base64
import hashlib
import re

from app.templating import ASSETS, STATIC_DIR

VERSION_IN_FILE = {
    "htmx": r'version:"([\d.]+)"',
    "sortable": r"Sortable ([\d.]+)",
    "chartjs": r"Chart\.js v([\d.]+)",
}


def test_each_cdn_url_is_pinned_to_the_vendored_version_with_its_sri_hash():
    assert set(ASSETS) == set(VERSION_IN_FILE)
    for name, asset in ASSETS.items():
        data = (STATIC_DIR / asset.vendored).read_bytes()
        version = re.search(VERSION_IN_FILE[name], data[:200_000].decode("utf-8", "replace")).group(1)
        assert f"@{version}/" in asset.cdn, (name, version, asset.cdn)
        digest = base64.b64encode(hashlib.sha384(data).digest()).decode()
        assert asset.integrity == f"sha384-{digest}", name
        assert asset.global_name in data.decode("utf-8", "replace"), name


def test_the_fallback_script_is_an_external_file_that_loads_the_vendored_copy():
    script = (STATIC_DIR / "js" / "asset_fallback.js").read_text()
    assert "dataset.global" in script and "dataset.src" in script
