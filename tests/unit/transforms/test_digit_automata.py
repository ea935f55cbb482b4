import random
import re

import pyarrow as pa
import pytest
from phonenumbers import PhoneMetadata

from conduit.transforms.digit_automata import (
    AutomatonSet,
    DigitAutomaton,
    UnsupportedPattern,
    cached_automaton,
    digit_matrix,
    digit_strings,
    drop_leading,
)


def _bits(patterns, numbers):
    automaton = AutomatonSet([DigitAutomaton(patterns)])
    digits, lengths = digit_matrix(pa.array(numbers))
    return automaton.match(digits, lengths, [0] * len(numbers)).tolist()


@pytest.mark.parametrize("region", ["US", "DE", "GB", "FR", "IT", "AT", "CH", "BR", "IN", "JP"])
def test_agrees_with_re_fullmatch_on_phone_metadata(region):
    metadata = PhoneMetadata.metadata_for_region(region)
    descs = [metadata.general_desc, metadata.fixed_line, metadata.mobile, metadata.toll_free, metadata.voip]
    patterns = [d.national_number_pattern for d in descs if d is not None and d.national_number_pattern]
    rng = random.Random(region)
    numbers = ["".join(rng.choice("0123456789") for _ in range(rng.randint(0, 15))) for _ in range(400)]
    numbers += [d.example_number for d in descs if d is not None and d.example_number]
    expected = [sum(1 << i for i, p in enumerate(patterns) if re.fullmatch(p, n)) for n in numbers]
    assert _bits(patterns, numbers) == expected
    assert any(expected)  # the examples do match


def test_repeats_classes_and_alternatives():
    patterns = [r"[2-9]\d{2}", r"0(?:30|40)\d{1,3}", r"1?5", r"[^0-8]+"]
    numbers = ["200", "199", "030", "0301", "0401234", "04012345", "5", "15", "115", "99", "9"]
    expected = [sum(1 << i for i, p in enumerate(patterns) if re.fullmatch(p, n)) for n in numbers]
    assert _bits(patterns, numbers) == expected


@pytest.mark.parametrize("pattern", [r"\w+", r"(?=1)1", "a", r"1\b"])
def test_unsupported_syntax_is_refused(pattern):
    with pytest.raises(UnsupportedPattern):
        DigitAutomaton([pattern])


def test_automata_sets_run_each_row_through_its_own_automaton():
    automata = AutomatonSet([DigitAutomaton(["1+"]), DigitAutomaton(["2+"])])
    digits, lengths = digit_matrix(pa.array(["11", "11", "22", "22"]))
    assert automata.match(digits, lengths, [0, 1, 0, 1]).tolist() == [1, 0, 0, 1]


def test_digit_matrix_round_trip_and_drop_leading():
    texts = pa.array(["+49 (30) 12", "", None, "0-1"])
    digits, lengths = digit_matrix(texts)
    assert lengths.tolist() == [6, 0, 0, 2]
    assert digit_strings(digits, lengths).to_pylist() == ["493012", "", "", "01"]
    dropped, dropped_lengths = drop_leading(digits, lengths, lengths * 0 + 2)
    assert digit_strings(dropped, dropped_lengths).to_pylist() == ["3012", "", "", ""]


def test_cached_automata_are_built_once_and_read_back_equal(tmp_path):
    patterns = {0: r"[2-9]\d{2}", 3: r"0(?:30|40)\d{1,3}", 62: r"(?:1|55)\d*"}
    built = cached_automaton(patterns, tmp_path)
    files = list((tmp_path / "digit-automata").glob("*.npy"))
    assert len(files) == 1
    read = cached_automaton(patterns, tmp_path)
    assert read is not built and read.transitions.dtype == built.transitions.dtype
    assert read.transitions.tolist() == DigitAutomaton(patterns).transitions.tolist()
    assert read.accepts.tolist() == DigitAutomaton(patterns).accepts.tolist()
    assert read.accepts.max() >> 62 == 1  # the high bit survives the file
    # other patterns, another file; a damaged file is built again and replaced
    cached_automaton({0: "1+"}, tmp_path)
    assert len(list((tmp_path / "digit-automata").glob("*.npy"))) == 2
    files[0].write_bytes(b"not an array")
    again = cached_automaton(patterns, tmp_path)
    assert again.transitions.tolist() == built.transitions.tolist()
    assert cached_automaton(patterns, tmp_path).accepts.tolist() == built.accepts.tolist()


def test_cached_automaton_works_where_the_cache_cannot_be_written(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache directory would go")
    automaton = cached_automaton({0: "12"}, blocked)
    assert _match(automaton, ["12", "13"]) == [1, 0]


def _match(automaton, numbers):
    digits, lengths = digit_matrix(pa.array(numbers))
    return AutomatonSet([automaton]).match(digits, lengths, [0] * len(numbers)).tolist()


def test_a_failed_cache_write_leaves_no_partial_file(tmp_path, monkeypatch):
    def disk_full(file, array):
        file.write(b"\x93NUMPY half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("conduit.transforms.digit_automata.np.save", disk_full)
    automaton = cached_automaton({0: "12"}, tmp_path)
    assert _match(automaton, ["12", "13"]) == [1, 0]
    assert list((tmp_path / "digit-automata").iterdir()) == []
