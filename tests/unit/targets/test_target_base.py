"""The target interface's plain parts: watermark order and the key checksum."""

from __future__ import annotations

import hashlib

import pandas as pd

from conduit.targets.base import KeyChecksum, Watermark, frame_key_checksum, key_checksum_of


def test_watermark_orders_by_timestamp_then_id():
    assert Watermark(10, 5) < Watermark(11, 1)
    assert Watermark(10, 5) < Watermark(10, 6)
    assert max(Watermark(10, 6), Watermark(10, 5), Watermark(9, 99)) == Watermark(10, 6)


def test_key_checksum_ignores_order_but_not_content_or_duplicates():
    pairs = [("HS-C-1", "aa"), ("HS-C-2", "bb"), ("HS-C-3", "cc")]
    assert key_checksum_of(pairs) == key_checksum_of(reversed(pairs))
    assert key_checksum_of(pairs) != key_checksum_of([*pairs[:2], ("HS-C-3", "cd")])
    assert key_checksum_of(pairs) != key_checksum_of([*pairs, pairs[0]])
    assert key_checksum_of(pairs + [pairs[0], pairs[0]]) != key_checksum_of(pairs[1:])  # no XOR cancelling
    assert str(key_checksum_of([])) == "0:0000000000000000"


def test_key_checksum_is_count_and_md5_digest_sum():
    digest = int(hashlib.md5(b"HS-C-1:aa").hexdigest()[:16], 16)
    assert str(key_checksum_of([("HS-C-1", "aa")])) == f"1:{digest:016x}"


def test_key_checksums_add_up_and_parts_come_out_again():
    pairs = [("HS-C-1", "aa"), ("HS-C-2", "bb"), ("HS-C-3", "cc")]
    whole = key_checksum_of(pairs)
    assert key_checksum_of(pairs[:1]) + key_checksum_of(pairs[1:]) == whole
    assert whole - key_checksum_of(pairs[1:2]) == key_checksum_of([pairs[0], pairs[2]])
    assert whole - whole == key_checksum_of([]) == KeyChecksum()
    wrapped = KeyChecksum(1, -1)  # PostgreSQL sums signed digests: the same sum modulo 2**64
    assert wrapped == KeyChecksum(1, (1 << 64) - 1) and str(wrapped) == "1:ffffffffffffffff"


def test_frame_checksum_matches_pairs_and_renders_integer_keys_as_text():
    frame = pd.DataFrame({"crm_id": pd.array([2, 1], dtype="Int64"), "row_hash": ["bb", "aa"]})
    assert frame_key_checksum(frame, "crm_id") == key_checksum_of([("1", "aa"), ("2", "bb")])


def test_checksum_in_batches_is_the_per_row_md5_sum_modulo_2_64():
    # more rows than one batch, digests whose sum wraps past 2**64 many times
    pairs = [(f"HS-C-{i}", hashlib.sha1(str(i).encode()).hexdigest()) for i in range(25_003)]
    expected = sum(int(hashlib.md5(f"{k}:{h}".encode()).hexdigest()[:16], 16) for k, h in pairs) % (1 << 64)
    assert key_checksum_of(iter(pairs)) == KeyChecksum(25_003, expected)
    frame = pd.DataFrame({"crm_id": [k for k, _ in pairs], "row_hash": [h for _, h in pairs]})
    assert frame_key_checksum(frame, "crm_id") == KeyChecksum(25_003, expected)
