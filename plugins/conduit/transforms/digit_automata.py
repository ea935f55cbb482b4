"""Regular expressions over digits as automata that test many numbers at once with numpy.

phonenumbers' metadata describes each region's numbers with regular expressions over digits
(``[2-9]\\d{2}``, alternatives, groups, repeats). Arrow's regex functions compile a pattern on
every call (about a millisecond for these), which costs more than the matching itself on a
10,000-row batch; Python's ``re`` costs a microsecond a number. Compiled once into a DFA, a
pattern is a table lookup per digit, vectorised over all numbers.

Only that regex subset is understood; anything else raises ``UnsupportedPattern`` and the
caller leaves those numbers to the library. Full-match is a question of the language a
pattern matches, not of the order the regex engine tries alternatives, so the DFA agrees with
``re.fullmatch`` exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_DIGITS = frozenset(range(10))
PAD = 10  # the symbol that pads shorter numbers; it leaves every state where it is


class UnsupportedPattern(ValueError):
    pass


# --- parsing: pattern -> tree of ("set", digits) / ("seq", [..]) / ("alt", [..]) / ("rep", node, lo, hi)


class _Parser:
    def __init__(self, pattern: str):
        self.text, self.pos = pattern, 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def take(self) -> str:
        char = self.peek()
        if not char:
            raise UnsupportedPattern("unexpected end")
        self.pos += 1
        return char

    def parse(self):
        node = self.alternation()
        if self.pos != len(self.text):
            raise UnsupportedPattern(f"unexpected {self.peek()!r} at {self.pos}")
        return node

    def alternation(self):
        options = [self.sequence()]
        while self.peek() == "|":
            self.take()
            options.append(self.sequence())
        return options[0] if len(options) == 1 else ("alt", options)

    def sequence(self):
        items = []
        while self.peek() not in ("", "|", ")"):
            items.append(self.repeat(self.atom()))
        return ("seq", items)

    def atom(self):
        char = self.take()
        if char.isdigit():
            return ("set", frozenset({int(char)}))
        if char == "\\":
            if self.take() != "d":
                raise UnsupportedPattern("only \\d escapes")
            return ("set", _DIGITS)
        if char == "[":
            return ("set", self.char_class())
        if char == "(":
            if self.text.startswith("?:", self.pos):
                self.pos += 2
            elif self.peek() == "?":
                raise UnsupportedPattern("only plain and (?:) groups")
            node = self.alternation()
            if self.take() != ")":
                raise UnsupportedPattern("unbalanced group")
            return node
        raise UnsupportedPattern(f"unsupported {char!r}")

    def char_class(self) -> frozenset[int]:
        negate = self.peek() == "^"
        if negate:
            self.take()
        digits: set[int] = set()
        while (char := self.take()) != "]":
            if char == "\\":
                if self.take() != "d":
                    raise UnsupportedPattern("only \\d escapes")
                digits |= _DIGITS
            elif char.isdigit() and self.peek() == "-" and self.text[self.pos + 1 : self.pos + 2].isdigit():
                self.take()
                digits |= set(range(int(char), int(self.take()) + 1))
            elif char.isdigit():
                digits.add(int(char))
            else:
                raise UnsupportedPattern(f"unsupported {char!r} in a class")
        return frozenset(_DIGITS - digits if negate else digits)

    def repeat(self, node):
        char = self.peek()
        if char in ("?", "*", "+"):
            self.take()
            low, high = {"?": (0, 1), "*": (0, None), "+": (1, None)}[char]
        elif char == "{":
            self.take()
            spec = ""
            while (c := self.take()) != "}":
                spec += c
            low_text, comma, high_text = spec.partition(",")
            if not low_text.isdigit() or (high_text and not high_text.isdigit()):
                raise UnsupportedPattern(f"unsupported repeat {{{spec}}}")
            low = int(low_text)
            high = (int(high_text) if high_text else None) if comma else low
        else:
            return node
        if self.peek() == "?":  # lazy or greedy: the same language
            self.take()
        return ("rep", node, low, high)


# --- NFA (Thompson) -----------------------------------------------------------------------------


@dataclass
class _Nfa:
    moves: list[list[tuple[frozenset[int], int]]] = field(default_factory=list)
    empty: list[list[int]] = field(default_factory=list)

    def state(self) -> int:
        self.moves.append([])
        self.empty.append([])
        return len(self.moves) - 1

    def build(self, node) -> tuple[int, int]:
        """A fragment for ``node``: (entry, exit)."""
        kind = node[0]
        entry, exit_ = self.state(), self.state()
        if kind == "set":
            self.moves[entry].append((node[1], exit_))
        elif kind == "seq":
            current = entry
            for item in node[1]:
                start, end = self.build(item)
                self.empty[current].append(start)
                current = end
            self.empty[current].append(exit_)
        elif kind == "alt":
            for option in node[1]:
                start, end = self.build(option)
                self.empty[entry].append(start)
                self.empty[end].append(exit_)
        else:  # rep
            _, item, low, high = node
            current = entry
            for _ in range(low):
                start, end = self.build(item)
                self.empty[current].append(start)
                current = end
            if high is None:
                start, end = self.build(item)
                self.empty[current] += [start, exit_]
                self.empty[end] += [start, exit_]
            else:
                for _ in range(high - low):
                    start, end = self.build(item)
                    self.empty[current] += [start, exit_]
                    current = end
            self.empty[current].append(exit_)
        return entry, exit_

    def closure(self, states) -> frozenset[int]:
        seen, todo = set(states), list(states)
        while todo:
            for nxt in self.empty[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return frozenset(seen)


# --- DFA ----------------------------------------------------------------------------------------


class DigitAutomaton:
    """Full-matches digit strings against several patterns at once. ``transitions[state, digit]``
    is the next state (state 0 rejects everything, state 1 is the start); ``accepts[state]``
    has bit ``i`` set when pattern ``i`` matches what was read."""

    def __init__(self, patterns: list[str] | dict[int, str]):
        """``patterns``: a list (pattern ``i`` sets bit ``i``) or a {bit: pattern} dict."""
        bits = patterns if isinstance(patterns, dict) else dict(enumerate(patterns))
        if any(not 0 <= bit < 63 for bit in bits):
            raise UnsupportedPattern("bits 0 to 62 only")
        nfa = _Nfa()
        start = nfa.state()
        finals: dict[int, int] = {}
        for bit, pattern in bits.items():
            entry, exit_ = nfa.build(_Parser(pattern).parse())
            nfa.empty[start].append(entry)
            finals[exit_] = finals.get(exit_, 0) | (1 << bit)
        dead = frozenset()
        index = {dead: 0, nfa.closure([start]): 1}
        order = [dead, nfa.closure([start])]
        rows: list[list[int]] = []
        closures: dict[frozenset[int], frozenset[int]] = {}  # many subsets step to the same states
        for current in order:  # grows while new subsets are found
            row = []
            by_digit: list[set[int]] = [set() for _ in range(10)]
            for s in current:
                for digits, t in nfa.moves[s]:
                    for digit in digits:
                        by_digit[digit].add(t)
            for digit in range(10):
                targets = frozenset(by_digit[digit])
                if not targets:
                    subset = dead
                elif (subset := closures.get(targets)) is None:
                    subset = closures[targets] = nfa.closure(targets)
                if subset not in index:
                    index[subset] = len(order)
                    order.append(subset)
                row.append(index[subset])
            rows.append(row)
        self.transitions = np.array(rows, dtype=np.int32)
        self.accepts = np.array(
            [sum(bits for s, bits in finals.items() if s in subset) for subset in order], dtype=np.int64
        )

    @classmethod
    def from_tables(cls, transitions: np.ndarray, accepts: np.ndarray) -> DigitAutomaton:
        automaton = cls.__new__(cls)
        automaton.transitions, automaton.accepts = transitions, accepts
        return automaton


_CACHE_FORMAT = 1  # part of every cache key: bump it when the construction changes


def cache_dir() -> Path:
    """Where built automata are kept: ``CONDUIT_CACHE_DIR``, else the user's cache directory."""
    configured = os.environ.get("CONDUIT_CACHE_DIR")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "conduit"


def cached_automaton(patterns: dict[int, str], directory: Path | None = None) -> DigitAutomaton:
    """``DigitAutomaton(patterns)``, built once per machine: a region's automaton takes ~10 ms to
    build and a batch meets dozens of regions, which would be most of a small batch's transform.
    Kept as ``.npy`` tables named by a hash of the patterns; a file that cannot be read is built
    again, and a directory that cannot be written only costs the build."""
    key = json.dumps([_CACHE_FORMAT, sorted(patterns.items())])
    path = (directory or cache_dir()) / "digit-automata" / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.npy"
    try:
        tables = np.load(path, allow_pickle=False)
        if tables.ndim == 2 and tables.shape[1] == 11:
            return DigitAutomaton.from_tables(tables[:, :10].astype(np.int32), tables[:, 10])
    except (OSError, ValueError):
        pass
    automaton = DigitAutomaton(patterns)
    written = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as tmp:
            written = Path(tmp.name)
            np.save(tmp, np.hstack([automaton.transitions.astype(np.int64), automaton.accepts[:, None]]))
        os.replace(written, path)  # readers see a whole file or none
    except OSError:
        if written is not None:
            written.unlink(missing_ok=True)  # e.g. a full disk: leave no partial file behind
    return automaton


class AutomatonSet:
    """Several automata stacked into one table, so numbers bound for different automata run
    together: ``match(digits, lengths, which)`` runs row ``i`` through automaton ``which[i]``."""

    def __init__(self, automata: list[DigitAutomaton]):
        offsets = np.cumsum([0] + [len(a.transitions) for a in automata])
        self.start = (offsets[:-1] + 1).astype(np.int32)
        stacked = [a.transitions + offset for a, offset in zip(automata, offsets[:-1], strict=True)]
        table = np.concatenate(stacked) if stacked else np.zeros((0, 10), np.int32)
        pad = np.arange(len(table), dtype=np.int32)[:, None]  # PAD leaves a state as it is
        self.table = np.hstack([table, pad]).ravel()  # flat: next state = table[state * 11 + symbol]
        self.accepts = np.concatenate([a.accepts for a in automata]) if automata else np.zeros(0, np.int64)

    def match(self, digits: np.ndarray, lengths: np.ndarray, which: np.ndarray) -> np.ndarray:
        """Accept bits for numbers ``digits`` (a digit matrix) of ``lengths``."""
        state = self.start[which]
        columns = np.asfortranarray(digits[:, : int(lengths.max()) if len(lengths) else 0])
        for column in columns.T:
            state = np.take(self.table, state * (PAD + 1) + column)
        return self.accepts[state]


# --- numbers as digit matrices --------------------------------------------------------------------


def utf8_data(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The UTF-8 bytes of a string array (without copying) and each text's offsets into them."""
    if not len(texts):
        return np.zeros(0, np.uint8), np.zeros(1, np.int64)
    offsets_buffer, data_buffer = texts.buffers()[1:3]
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32)[texts.offset : texts.offset + len(texts) + 1]
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
    return data[offsets[0] : offsets[-1]], offsets - offsets[0]


def text_bytes(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The UTF-8 bytes of all texts (nulls read as empty) and the row each byte belongs to."""
    data, offsets = utf8_data(pc.fill_null(texts.cast(pa.string()), ""))
    return data, np.repeat(np.arange(len(texts)), np.diff(offsets))


def digit_matrix(texts: pa.Array, min_width: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The ASCII digits of each text (other characters skipped) as a matrix, one row per
    text, shorter rows padded with ``PAD``; and how many digits each text has."""
    data, row = text_bytes(texts)
    is_digit = (data >= ord("0")) & (data <= ord("9"))
    data, row = data[is_digit], row[is_digit]
    lengths = np.bincount(row, minlength=len(texts))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(lengths) else lengths
    width = max(int(lengths.max()) if len(lengths) else 0, min_width)
    matrix = np.full((len(texts), width), PAD, dtype=np.int32)
    matrix[row, np.arange(len(row)) - starts[row]] = data - ord("0")
    return matrix, lengths


def digit_strings(digits: np.ndarray, lengths: np.ndarray) -> pa.Array:
    """The inverse of ``digit_matrix``."""
    inside = np.arange(digits.shape[1]) < lengths[:, None]
    data = (digits[inside] + ord("0")).astype(np.uint8)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.StringArray.from_buffers(len(lengths), pa.py_buffer(offsets), pa.py_buffer(data.tobytes()))


def drop_leading(digits: np.ndarray, lengths: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The numbers without their first ``count`` digits (per row)."""
    width = digits.shape[1]
    source = np.minimum(np.arange(width) + count[:, None], max(width - 1, 0))
    shifted = np.take_along_axis(digits, source, axis=1) if width else digits
    remaining = np.maximum(lengths - count, 0)
    shifted[np.arange(width) >= remaining[:, None]] = PAD
    return shifted, remaining
