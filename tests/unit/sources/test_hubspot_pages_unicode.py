"""Response bodies whose text is not Unicode (undecodable bytes, lone surrogate escapes) decode
into pages with U+FFFD in its place; bodies that are not JSON, or not the API's shape, still fail.
Plus the same for records decoded elsewhere (conduit.pipeline.pages)."""

from __future__ import annotations

import json

import msgspec
import pytest

from conduit.pipeline.pages import RecordPage, pages_to_table, replace_lone_surrogates
from conduit.sources.hubspot.pages import decode_json, page_decoder, repair_unicode

PROPS = ("firstname", "lastname")


def body(*names: bytes) -> bytes:
    """A search page of one record per first name (raw JSON string contents, spliced in as is)."""
    results = b",".join(b'{"id":"%d","properties":{"firstname":"%s","lastname":"L"}}' % (i, n)
                        for i, n in enumerate(names, start=1))
    return b'{"results":[' + results + b'],"total":%d,"paging":{"next":{"after":"7"}}}' % len(names)


@pytest.mark.parametrize("wire, read", [
    (b"Jos\xff\xfe", "Jos\ufffd\ufffd"),  # not UTF-8
    (b"\xed\xa0\x80", "\ufffd\ufffd\ufffd"),  # a surrogate encoded as UTF-8 (CESU-8)
    (b"A\\ud800B", "A\ufffdB"),  # a lone high surrogate escape
    (b"\\udc00", "\ufffd"),  # a lone low surrogate escape
    (b"\\ude00\\ud83d", "\ufffd\ufffd"),  # a pair the wrong way round
    (b"\\ud800\\ude00", "\U00010200"),  # a proper pair stays what it is
])
def test_text_that_is_not_unicode_reads_as_replacement_characters(wire, read):
    page = page_decoder(PROPS).decode(body(b"clean \\u0000 \\\\ud800 \xf0\x9f\x98\x80", wire))
    assert page.ids == ["1", "2"] and (page.total, page.after) == (2, "7")
    assert [r["properties"]["firstname"] for r in page] == ["clean \x00 \\ud800 😀", read]


def test_a_clean_body_is_not_repaired():
    assert repair_unicode(body(b"\\u0000 \\\\ud800 \\ud83d\\ude00 plain")) is None


@pytest.mark.parametrize("bad", [b'{"results":[{"id":"1","properties":{"firstname":"\xff', b"\xff not json",
                                 b'{"results":[{"id":"1","properties":{"firstname":"\\ud800"'])
def test_a_body_that_is_not_json_still_fails(bad):
    with pytest.raises((msgspec.DecodeError, UnicodeDecodeError)):
        page_decoder(PROPS).decode(bad)


def test_a_wrong_type_still_fails_with_or_without_damaged_text():
    for name in (b"\xff", b"ok"):
        wrong = body(name).replace(b'"lastname":"L"', b'"lastname":7')
        with pytest.raises(msgspec.ValidationError, match="lastname"):
            page_decoder(PROPS).decode(wrong)


def test_decode_json_is_as_lenient_for_plain_bodies():
    assert decode_json(b'{"results":[{"id":"1","properties":{"email":"a\\ud800\xff"}}],"total":1}') == {
        "results": [{"id": "1", "properties": {"email": "a\ufffd\ufffd"}}], "total": 1}
    assert decode_json(b'{"total":3}') == {"total": 3}


def test_replace_lone_surrogates_walks_keys_and_values():
    value = json.loads('{"k\\ud800": ["a\\udc00", {"x": "\\ud83d\\ude00"}, 1, null], "t": ["\\ud800"]}')
    assert replace_lone_surrogates(value) == {"k\ufffd": ["a\ufffd", {"x": "😀"}, 1, None], "t": ["\ufffd"]}
    assert replace_lone_surrogates(("\ud800", 2)) == ("\ufffd", 2)


def test_pages_of_records_with_lone_surrogates_become_arrow():
    records = json.loads('[{"id": "1", "properties": {"firstname": "A\\ud800", "lastname": "\\u0000"}},'
                         ' {"id": "2", "properties": {"firstname": "fine"}}]')
    table = pages_to_table([RecordPage.from_records(records, PROPS)], ["firstname", "lastname"])
    assert table.to_pylist() == [{"id": "1", "firstname": "A\ufffd", "lastname": "\x00"},
                                 {"id": "2", "firstname": "fine", "lastname": None}]
