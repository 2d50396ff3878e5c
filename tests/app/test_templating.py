"""app.templating. The front-end assets: each CDN URL is pinned to the version vendored in static/vendor, and its
integrity hash is that vendored file's (the same npm file), so the browser runs the CDN copy only when it is byte for
byte the same. The markdown: text only, no images (a remote image in a prompt would be fetched by every annotator's
browser: a tracking pixel)."""

from __future__ import annotations

import base64
import hashlib
import re

from app.templating import ASSETS, STATIC_DIR, render_markdown

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


def test_markdown_renders_no_image_and_no_html():
    html = str(render_markdown("**bold** ![pixel](https://tracker.example/p.gif?u=1) <img src=x onerror=alert(1)>"))
    assert "<strong>bold</strong>" in html
    assert "<img" not in html and 'src="https://tracker.example' not in html
    assert "&lt;img" in html  # raw HTML shows as text


def test_an_image_in_a_prompt_is_not_shown_as_an_image(client, db, make_user, login):
    from tests.factories import make_tasks, task_line

    make_tasks(db, task_line(prompt="look ![x](https://tracker.example/pixel.gif)"))
    login(make_user("annotator"))
    page = client.get("/annotate")
    assert page.status_code == 200 and "look" in page.text and "<img" not in page.text
