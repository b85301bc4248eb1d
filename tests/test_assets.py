"""Assets for phones (issue 20): compressed responses, content-hashed static URLs with a year-long immutable
cache, the favicon and touch icon, a meta description."""

from __future__ import annotations

import gzip
import hashlib
import re
from pathlib import Path

STATIC = Path(__file__).resolve().parent.parent / "crm" / "static"


def test_pages_carry_hashed_static_urls_icons_and_a_description(client):
    html = client.get("/login").get_data(as_text=True)
    digest = hashlib.sha256((STATIC / "app.css").read_bytes()).hexdigest()[:12]
    assert f"/static/app.css?v={digest}" in html
    assert re.search(r'/static/htmx\.min\.js\?v=[0-9a-f]{12}"', html)
    assert 'rel="apple-touch-icon"' in html and 'rel="icon"' in html
    assert '<meta name="description" content="' in html


def test_versioned_static_files_are_cached_for_a_year_and_others_revalidate(client):
    html = client.get("/login").get_data(as_text=True)
    url = re.search(r'href="(/static/app\.css\?v=[0-9a-f]+)"', html).group(1)
    fresh = client.get(url)
    assert fresh.status_code == 200
    cc = fresh.headers["Cache-Control"]
    assert "max-age=31536000" in cc and "immutable" in cc and "public" in cc
    stale = client.get("/static/app.css?v=000000000000")
    assert "immutable" not in stale.headers["Cache-Control"] and "no-cache" in stale.headers["Cache-Control"]
    assert "no-cache" in client.get("/static/app.css").headers["Cache-Control"]


def test_responses_are_compressed_when_the_browser_accepts_it(client):
    resp = client.get("/login", headers={"Accept-Encoding": "gzip"})
    assert resp.headers.get("Content-Encoding") == "gzip"
    assert "公海" in gzip.decompress(resp.data).decode()
    assert "Accept-Encoding" in resp.headers.get("Vary", "")
    css = client.get("/static/app.css", headers={"Accept-Encoding": "br, gzip"})
    assert css.headers.get("Content-Encoding") in ("br", "gzip")
    plain = client.get("/login")
    assert "Content-Encoding" not in plain.headers and "公海" in plain.get_data(as_text=True)


def test_favicon_is_served(client):
    resp = client.get("/favicon.ico")
    assert resp.status_code == 200 and resp.mimetype == "image/png" and resp.data[:8] == b"\x89PNG\r\n\x1a\n"
