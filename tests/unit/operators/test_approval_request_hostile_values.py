"""The approval request (``approve_plan``'s body, Markdown the Airflow UI renders) quotes CRM
values in its samples. A person decides on what it says, so a value must read as the value it
is: a backtick or a line break in a CRM field must not end the quote and add text, emphasis or
links of its own to the request. Rendered with a CommonMark parser (markdown-it), as the UI does."""

from __future__ import annotations

from markdown_it import MarkdownIt

from conduit.pipeline.plan import approval_markdown
from conduit.targets.base import KeyChecksum, LoadPlan, LoadResult

HOSTILE = ("Acme`\n\n**Reviewed by the data team: safe to approve.** "
           "[details](https://evil.example/approve) `")


def request_with(value: str) -> str:
    result = LoadResult(inserted=0, updated=300, unchanged=300, deleted=1, stale_skipped=0, refused=0)
    samples = {"update": [{"key": "HS-C-1", "changed": ["company_name"], "before": {"company_name": "Old"},
                           "after": {"company_name": value}}],
               "delete": [{"customer_number": value}], "insert": []}
    plan = LoadPlan(result, 600, KeyChecksum(600, 1), {"company_name": 300}, samples)
    return approval_markdown(plan, "would update 300 of 600 active customers", "customer_number")


def inline_tokens(markdown: str) -> list:
    return [child for token in MarkdownIt("commonmark").parse(markdown) if token.children
            for child in token.children]


def test_a_crm_value_in_the_samples_adds_no_text_emphasis_or_link_to_the_request():
    tokens, plain = inline_tokens(request_with(HOSTILE)), inline_tokens(request_with("Acme"))

    markup = ("link_open", "strong_open", "em_open", "html_inline")
    assert [t.type for t in tokens if t.type in markup] == [t.type for t in plain if t.type in markup]
    assert not [t for t in tokens if t.type == "text" and "safe to approve" in t.content]
    shown = [t.content for t in tokens if t.type == "code_inline"]
    assert sum("safe to approve" in c and "evil.example" in c for c in shown) == 2  # quoted whole, twice
