"""Property tests for the cell-language parser: whatever text it is given, `lstmc.parse` either returns
a `Cell` or raises `SpecError` located inside that text; nothing else ever escapes (no LarkError,
KeyError, IndexError, RecursionError...)."""

from __future__ import annotations

import importlib.resources
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lstmc
from lstmc import SpecError

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                    database=None)

BUILTIN_TEXTS = [(importlib.resources.files("lstmc.cells") / f"{name}.cell").read_text()
                 for name in lstmc.builtin_cells()]

# pieces a mutation splices in: the language's own tokens, Python's, and some hostile characters
TOKENS = [
    "h", "c", "h'", "c'", "x", "W", "U_i", "b", "i", "g", "o", "'", "''", "=", "==", "+", "-", "*", "**", "/",
    "@", "(", ")", ",", ".", ".5", "1e-3", "1e999", "0", "1.", "#", " ", "\t", "\n", "\r", ";", ":", "[", "]",
    "{", "}", '"', "\\", "%", "^", "|", "tanh", "sigmoid", "sigmod", "relu(", "exp", "cell", "state", "output",
    "init", "init b = 1", "init W = xavier", "xavier", "lambda", "if", "else", "not", "class", "None", "import",
    "_", "match", "x=", "W @ x", "U @ h", "U @ (h * h)", "(" * 70, "-" * 70, "\x00", "\u2212", "\xa0", "\u03c3",
    "\ufeff", "\u2028", "\U0001f600", "é",
]


def check(text: str) -> None:
    try:
        cell = lstmc.parse(text, filename="fuzz.cell")
    except SpecError as e:
        n_lines = text.count("\n") + 1
        assert 1 <= e.line <= n_lines, (e.line, n_lines, str(e))
        assert e.col >= 1
        assert e.problem and e.fix, str(e)
        assert str(e).startswith(f"fuzz.cell:{e.line}:{e.col}: error: ")
        return
    # a successful parse is a consistent Cell
    assert isinstance(cell, lstmc.Cell)
    assert cell.states and set(cell.new) == set(cell.states)
    assert cell.output in cell.states
    assert set(cell.params.values()) <= {"W", "U", "b"}
    assert set(cell.inits) <= set(cell.params)
    for name in (*cell.states, *cell.params):
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name)


# ----------------------------------------------------------------------------------- random text

@SETTINGS
@given(st.text(max_size=300))
def test_random_text(text):
    check(text)


@SETTINGS
@given(st.text(alphabet=st.sampled_from("cellstatoupinh'xWUb_=+-*/@(),.#0123456789e \t\n"), max_size=200))
def test_random_text_from_the_language_alphabet(text):
    check(text)


@SETTINGS
@given(st.lists(st.sampled_from(TOKENS), max_size=40))
def test_random_token_soup_after_a_header(tokens):
    check("cell c\nstate h, c\n" + " ".join(tokens))


@SETTINGS
@given(st.lists(st.lists(st.sampled_from(TOKENS), max_size=12).map(" ".join), max_size=12))
def test_random_token_lines(lines):
    check("\n".join(lines))


# ----------------------------------------------------------------------- mutations of the built-ins

@st.composite
def mutated_builtin(draw):
    text = draw(st.sampled_from(BUILTIN_TEXTS))
    lines = text.split("\n")
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["insert", "delete", "replace", "insert-token", "replace-token", "swap",
                                     "duplicate", "drop-line", "truncate"]))
        i = draw(st.integers(0, len(lines) - 1))
        line = lines[i]
        if kind in ("insert", "insert-token"):
            p = draw(st.integers(0, len(line)))
            piece = draw(st.characters() if kind == "insert" else st.sampled_from(TOKENS))
            lines[i] = line[:p] + piece + line[p:]
        elif kind == "delete" and line:
            p = draw(st.integers(0, len(line) - 1))
            n = draw(st.integers(1, 5))
            lines[i] = line[:p] + line[p + n:]
        elif kind == "replace" and line:
            p = draw(st.integers(0, len(line) - 1))
            lines[i] = line[:p] + draw(st.characters()) + line[p + 1:]
        elif kind == "replace-token":
            words = re.split(r"(\W)", line)
            if words:
                w = draw(st.integers(0, len(words) - 1))
                words[w] = draw(st.sampled_from(TOKENS))
                lines[i] = "".join(words)
        elif kind == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == "duplicate":
            lines.insert(i, line)
        elif kind == "drop-line" and len(lines) > 1:
            del lines[i]
        elif kind == "truncate":
            lines[i] = line[: draw(st.integers(0, len(line)))]
    return "\n".join(lines)


@SETTINGS
@given(mutated_builtin())
def test_mutated_builtin_cells(text):
    check(text)


@SETTINGS
@given(mutated_builtin(), st.sampled_from(["\n", "\r\n"]))
def test_mutated_builtin_cells_without_comments(text, newline):
    # without the comment lines every mutation lands in code
    check(newline.join(ln for ln in text.split("\n") if not ln.lstrip().startswith("#")))


@pytest.mark.parametrize("text", BUILTIN_TEXTS, ids=lstmc.builtin_cells())
def test_every_prefix_and_suffix_of_a_builtin(text):
    # a file cut off anywhere (an editor mid-save, a truncated download) is a SpecError or a Cell
    body = "\n".join(ln for ln in text.split("\n") if not ln.startswith("#"))
    for k in range(0, len(body) + 1, 3):
        check(body[:k])
        check(body[k:])
