"""The browser files the health view ships instead of loading them from CDNs.

Everything the pages and the Great Expectations Data Docs need lives under ``static/vendor/``,
taken once from npm at the pinned versions below, with each package's licence; ``SHA256SUMS``
there records what was taken. At run time nothing comes from the internet: the plugin rewrites the
CDN URLs GX writes into its Data Docs (:func:`rewrite_cdn_urls`) to these files.

``python -m conduit.ui.assets --check`` verifies the files against ``SHA256SUMS``;
``--fetch`` takes them from npm again (``npm pack``) and rewrites ``SHA256SUMS``.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

STATIC = Path(__file__).parent / "static"
VENDOR = STATIC / "vendor"
SUMS = VENDOR / "SHA256SUMS"


@dataclass(frozen=True)
class Package:
    """One npm package: which of its files are kept (package path -> path under its folder)."""

    name: str
    version: str
    licence: str
    files: dict[str, str]
    folder: str = ""
    licence_files: tuple[str, ...] = ("LICENSE",)
    cdn: dict[str, str] = field(default_factory=dict)
    """CDN URL found in GX's Data Docs -> the kept file (path under the package folder) it stands for."""

    @property
    def dir(self) -> str:
        return self.folder or f"{self.name.rsplit('/', 1)[-1]}-{self.version}"


PACKAGES: tuple[Package, ...] = (
    Package("uplot", "1.6.32", "MIT", {"dist/uPlot.iife.min.js": "uPlot.iife.min.js",
                                         "dist/uPlot.min.css": "uPlot.min.css"}),
    Package("jquery", "3.7.1", "MIT", {"dist/jquery.min.js": "jquery.min.js"}, licence_files=("LICENSE.txt",),
            cdn={"https://code.jquery.com/jquery-3.7.1.min.js": "jquery.min.js"}),
    # popper.js 1.12.9 ships no licence file; its MIT notice heads popper.min.js (kept as LICENSE.md)
    Package("popper.js", "1.12.9", "MIT", {"dist/umd/popper.min.js": "popper.min.js"}, licence_files=(),
            cdn={"https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": "popper.min.js"}),
    Package("bootstrap", "4.3.1", "MIT", {"dist/css/bootstrap.min.css": "bootstrap.min.css",
                                           "dist/js/bootstrap.min.js": "bootstrap.min.js"},
            cdn={"https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": "bootstrap.min.css",
                 "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": "bootstrap.min.js"}),
    Package("bootstrap-table", "1.19.1", "MIT", {
        "dist/bootstrap-table.min.css": "bootstrap-table.min.css",
        "dist/bootstrap-table.min.js": "bootstrap-table.min.js",
        "dist/extensions/filter-control/bootstrap-table-filter-control.min.css": "bootstrap-table-filter-control.min.css",
        "dist/extensions/filter-control/bootstrap-table-filter-control.min.js": "bootstrap-table-filter-control.min.js",
    }, cdn={
        "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": "bootstrap-table.min.css",
        "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": "bootstrap-table.min.js",
        # GX asks for the 1.19.0 stylesheet of the extension beside 1.19.1's script: one file serves both
        "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css":
            "bootstrap-table-filter-control.min.css",
        "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css":
            "bootstrap-table-filter-control.min.css",
        "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js":
            "bootstrap-table-filter-control.min.js",
    }),
    Package("bootstrap-datepicker", "1.9.0", "Apache-2.0", {
        "dist/css/bootstrap-datepicker.min.css": "bootstrap-datepicker.min.css",
        "dist/js/bootstrap-datepicker.min.js": "bootstrap-datepicker.min.js",
    }, cdn={
        "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css":
            "bootstrap-datepicker.min.css",
        "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js":
            "bootstrap-datepicker.min.js",
    }),
    Package("@forevolve/bootstrap-dark", "1.1.0", "MIT",
            {"dist/css/bootstrap-prefers-dark.css": "bootstrap-prefers-dark.css"},
            cdn={"https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css":
                 "bootstrap-prefers-dark.css"}),
    # the stylesheet and the woff2 fonts it names first (every browser that runs the pages reads woff2)
    Package("@fortawesome/fontawesome-free", "6.6.0", "CC-BY-4.0 AND OFL-1.1 AND MIT", {
        "css/all.min.css": "css/all.min.css",
        "webfonts/fa-solid-900.woff2": "webfonts/fa-solid-900.woff2",
        "webfonts/fa-regular-400.woff2": "webfonts/fa-regular-400.woff2",
        "webfonts/fa-brands-400.woff2": "webfonts/fa-brands-400.woff2",
        "webfonts/fa-v4compatibility.woff2": "webfonts/fa-v4compatibility.woff2",
    }, licence_files=("LICENSE.txt",),
        cdn={"https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": "css/all.min.css"}),
)

# Vega draws only profiling and distribution charts, which Conduit's expectations never render:
# its three scripts (1.3 MB) are dropped rather than shipped.
DROPPED_SCRIPTS = (
    "https://cdn.jsdelivr.net/npm/vega@5",
    "https://cdn.jsdelivr.net/npm/vega-lite@5",
    "https://cdn.jsdelivr.net/npm/vega-embed@6",
)
# GX's logo comes from its S3 bucket; the same images ship inside the great_expectations package.
GX_IMAGES_URL = "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/"
GX_IMAGE_ALIASES = {"full_logo_dark.png": "logo-long.png"}  # the dark logo is not in the package


def cdn_map() -> dict[str, str]:
    """CDN URL -> path of the vendored file under ``static/vendor/``."""
    return {url: f"{p.dir}/{kept}" for p in PACKAGES for url, kept in p.cdn.items()}


_SCRIPT_TAG = r'<script[^>]*\bsrc="{url}"[^>]*>\s*</script>\s*'
_GX_IMAGE = re.compile(re.escape(GX_IMAGES_URL) + r"([A-Za-z0-9_.-]+)")


def rewrite_cdn_urls(html: str, vendor_base: str, gx_images_base: str) -> str:
    """A Data Docs page that loads nothing from the internet: every CDN URL GX writes becomes the
    vendored file under ``vendor_base``, GX's S3 images come from ``gx_images_base``, the Vega
    scripts go. Bases end with ``/``."""
    for url in DROPPED_SCRIPTS:
        html = re.sub(_SCRIPT_TAG.format(url=re.escape(url)), "", html)
    for url, local in cdn_map().items():
        html = html.replace(url, vendor_base + local)
    return _GX_IMAGE.sub(lambda m: gx_images_base + GX_IMAGE_ALIASES.get(m.group(1), m.group(1)), html)


def external_urls(text: str) -> list[str]:
    """Every http(s) URL a page would load (``src``/``href`` of scripts and stylesheets, CSS
    ``url()``), for tests: links to web pages (``<a href>``) are not loads."""
    loads = re.findall(r'<(?:script|link|img)\b[^>]*?\b(?:src|href)="(https?://[^"]+)"', text)
    loads += re.findall(r"url\(['\"]?(https?://[^'\")]+)", text)
    return loads


# --- keeping the files ---------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def kept_files() -> list[Path]:
    """Every vendored file, licences included, relative to ``static/vendor/``."""
    paths = []
    for package in PACKAGES:
        paths += [Path(package.dir) / kept for kept in package.files.values()]
        paths += [Path(package.dir) / name for name in package.licence_files or ("LICENSE.md",)]
    return sorted(paths)


def check() -> list[str]:
    """Problems of the vendored files against ``SHA256SUMS`` (empty when all is well)."""
    recorded = dict(reversed(line.split("  ", 1)) for line in SUMS.read_text().splitlines() if line.strip())
    problems = []
    for rel in kept_files():
        path = VENDOR / rel
        if not path.is_file():
            problems.append(f"missing: {rel}")
        elif recorded.get(str(rel)) != _sha256(path):
            problems.append(f"checksum differs: {rel}")
    return problems


def fetch(npm: str = "npm") -> None:
    """Take every package from npm (``npm pack``) and keep the listed files and the licences."""
    with tempfile.TemporaryDirectory() as tmp:
        for package in PACKAGES:
            spec = f"{package.name}@{package.version}"
            out = subprocess.run([npm, "pack", spec, "--silent"], cwd=tmp, check=True, capture_output=True, text=True)
            unpacked = Path(tmp) / package.dir
            with tarfile.open(Path(tmp) / out.stdout.strip().splitlines()[-1]) as tar:
                tar.extractall(unpacked, filter="data")
            root, dest = unpacked / "package", VENDOR / package.dir
            shutil.rmtree(dest, ignore_errors=True)
            for source, kept in {**package.files, **{n: n for n in package.licence_files}}.items():
                (dest / kept).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(root / source, dest / kept)
            if not package.licence_files:
                header = (root / next(iter(package.files))).read_text().split("*/", 1)[0]
                (dest / "LICENSE.md").write_text(f"{spec}, {package.licence} (the notice heading its files):\n\n"
                                                 f"{header.strip()} */\n")
    SUMS.write_text("".join(f"{_sha256(VENDOR / rel)}  {rel}\n" for rel in kept_files()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fetch", action="store_true", help="take the files from npm again")
    parser.add_argument("--check", action="store_true", help="verify the files against SHA256SUMS")
    args = parser.parse_args(argv)
    if args.fetch:
        fetch()
    problems = check()
    print("\n".join(problems) or f"{len(kept_files())} vendored files match {SUMS.name}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
