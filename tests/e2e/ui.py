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
