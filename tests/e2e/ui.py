"""Driving the Airflow UI in Chromium: log in through SimpleAuthManager's form, take screenshots."""

from __future__ import annotations

import re

from e2e import topology

SHOTS = topology.REPO / "test-artifacts" / "e2e"


def shot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def log_in(page, stack, *, shot_as: str | None = None) -> None:
    page.goto(stack.base_url + "/")
    page.wait_for_url(re.compile(r".*/auth/login.*"))
    page.get_by_label(re.compile("username", re.I)).fill(stack.username)
    page.get_by_label(re.compile("password", re.I)).fill(stack.password)
    if shot_as:
        shot(page, shot_as)
    page.get_by_role("button", name=re.compile("sign in|log ?in", re.I)).click()
    page.wait_for_url(lambda url: "/auth/login" not in url)
    page.get_by_text(re.compile("Dags", re.I)).first.wait_for()


def follow_nav_link(page, name: str, url: re.Pattern, *, tries: int = 3, timeout_ms: int = 20_000) -> None:
    """Click the navigation link ``name`` until the page is at ``url``. Airflow's UI renders its nav
    before its router has settled: on a loaded machine a first click can be lost (seen once in CI:
    no navigation within 60 s, and the same test passed alone right after), so the click is tried
    again; a link that never leads there still fails."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    link = page.get_by_role("link", name=name).first
    for attempt in range(1, tries + 1):
        link.click()
        try:
            page.wait_for_url(url, timeout=timeout_ms)
            return
        except PlaywrightTimeout:
            if attempt == tries:
                raise
