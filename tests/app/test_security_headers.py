"""app.security_headers: every response carries the CSP, framing, sniffing and referrer headers; the policy allows
scripts from this server and the assets' CDN only, and no template needs an inline script."""

from __future__ import annotations

import re

from app.templating import ASSETS, TEMPLATES_DIR

HEADERS = ("content-security-policy", "x-frame-options", "x-content-type-options", "referrer-policy")


def _directives(policy: str) -> dict[str, list[str]]:
    return {d.split()[0]: d.split()[1:] for d in (p.strip() for p in policy.split(";")) if d}


def test_every_kind_of_response_carries_the_headers(client, api, make_user, login):
    _, headers = api("annotator")
    responses = [
        client.get("/login"),  # a page
        client.get("/api/v1/tasks/next", headers=headers),  # the annotate fast path
        client.get("/api/v1/annotations", headers=headers),  # a route
        client.get("/api/v1/users"),  # an error
        client.get("/static/css/app.css"),  # a static file
        client.get("/nowhere"),  # not found
        client.post("/api/v1/users", headers={"content-length": str(10**9)}),  # refused by the body limit
    ]
    for response in responses:
        missing = [h for h in HEADERS if h not in response.headers]
        assert not missing, (response.request.url, response.status_code, missing)
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"


def test_scripts_come_from_this_server_and_the_cdn_only(client):
    policy = _directives(client.get("/login").headers["content-security-policy"])
    cdn = {re.match(r"https://[^/]+", asset.cdn).group() for asset in ASSETS.values()}
    assert set(policy["script-src"]) == {"'self'", *cdn}
    assert policy["frame-ancestors"] == ["'none'"] and policy["object-src"] == ["'none'"]
    assert "'unsafe-inline'" not in policy["script-src"] and "'unsafe-eval'" not in policy["script-src"]


def test_no_template_has_an_inline_script_or_event_handler():
    inline = []
    for path in sorted(TEMPLATES_DIR.glob("*.html")):
        text = path.read_text()
        for tag in re.findall(r"<script\b[^>]*>", text):
            if "src=" not in tag and 'type="application/json"' not in tag:
                inline.append((path.name, tag))
        inline += [(path.name, m) for m in re.findall(r"\son[a-z]+=", text)]
    assert not inline, inline


def test_the_stats_chart_and_the_api_docs_load_their_scripts_from_files(client, make_user, login):
    login(make_user("admin"))
    docs = client.get("/docs")
    assert docs.status_code == 200 and '<script src="/static/js/swagger_init.js">' in docs.text
    assert client.get("/static/js/swagger_init.js").status_code == 200
    assert client.get("/static/js/throughput_chart.js").status_code == 200
    assert '<script src="/static/js/throughput_chart.js">' in (TEMPLATES_DIR / "admin_stats.html").read_text()
