"""Nothing the health view or the Data Docs it serves load comes from the internet: the vendored
files are the pinned ones (checksums, licences), and every CDN URL Great Expectations writes into
its pages is rewritten to one of them."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from conduit.ui import assets

UI = Path(assets.__file__).parent
GX_VIEW = Path(importlib.util.find_spec("great_expectations").submodule_search_locations[0]) / "render" / "view"


def gx_page_sources() -> list[Path]:
    """GX's page templates and the stylesheet it inlines into every page."""
    return sorted(GX_VIEW.glob("templates/*.j2")) + [GX_VIEW / "static" / "styles" / "data_docs_default_styles.css"]


def test_the_vendored_files_are_the_pinned_ones_with_their_licences():
    assert assets.check() == []
    for package in assets.PACKAGES:
        folder = assets.VENDOR / package.dir
        assert any(p.name.upper().startswith("LICENSE") for p in folder.iterdir()), package.name


def test_every_cdn_url_in_gx_pages_is_rewritten_to_a_vendored_file():
    rewritten = 0
    for path in gx_page_sources():
        text = path.read_text()
        rewritten += len(assets.external_urls(text))
        out = assets.rewrite_cdn_urls(text, "/conduit-ui/static/vendor/", "/docs/static/images/")
        assert assets.external_urls(out) == [], path.name
    assert rewritten >= 15  # GX's pages do load from CDNs: the test looks at the right files


def test_rewritten_urls_point_at_files_that_exist():
    for url, local in assets.cdn_map().items():
        assert (assets.VENDOR / local).is_file(), url
    html = '<link href="https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css"/>' \
           '<script src="https://cdn.jsdelivr.net/npm/vega@5"></script>\n' \
           '<img src="https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/logo-long.png?d=1">'
    out = assets.rewrite_cdn_urls(html, "/v/", "/site/static/images/")
    assert out == '<link href="/v/bootstrap-4.3.1/bootstrap.min.css"/>' \
                  '<img src="/site/static/images/logo-long.png?d=1">'
    assert (GX_VIEW / "static" / "images" / "logo-long.png").is_file()  # the site ships it (static/images)


@pytest.mark.parametrize("path", sorted((UI / "templates").glob("*.html")) + sorted(UI.glob("static/*.*")),
                         ids=lambda p: p.name)
def test_the_views_own_pages_load_nothing_from_elsewhere(path):
    if path.suffix not in (".html", ".css", ".js"):
        return
    text = path.read_text()
    assert assets.external_urls(text) == []
    assert not re.search(r"""(?:src|href)=["']//""", text)  # protocol-relative URLs neither
