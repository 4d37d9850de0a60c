"""Exact ONNX conversion of CountVectorizer and TfidfVectorizer, including their defaults.

scikit-learn lowercases a document, then finds its tokens with ``token_pattern`` (by
default ``(?u)\\b\\w\\w+\\b``: runs of at least two Unicode word characters). onnxruntime's
``Tokenizer`` uses RE2, whose ``\\w`` is ASCII-only, and its ``StringNormalizer``
lowercases character by character. The graph therefore:

1. tokenizes the *original* text with an RE2 class listing, as explicit code-point ranges,
   every character Python's ``\\w`` accepts after lowercasing (so RE2's own Unicode tables
   do not matter). The one character whose lowercase is two characters, U+0130 'İ'
   (``'i'`` + U+0307, not a word character), ends a token, as it does in Python;
2. lowercases the tokens with ``StringNormalizer`` (per character it agrees with
   ``str.lower`` on every word character; the Greek final sigma, which Python picks from
   the surrounding text, is the exception — the gate's upper-cased text probe finds it);
3. counts the n-grams of the vocabulary with ``TfIdfVectorizer`` (exact integer counts);
4. applies ``binary``, ``sublinear_tf`` (``log(tf) + 1`` looked up in a table numpy
   computed), ``idf_`` and the row norm in float64, as ``TfidfTransformer`` does.

Token patterns that are runs of one character class (``\\w``, or a bracketed class such as
``[a-zA-Z0-9_]``) of at least one or two characters convert; others are refused.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
from onnx import TensorProto
from sklearn.feature_extraction.text import TfidfVectorizer

from skewguard.bentos.builder import GraphBuilder, set_double_output

_SIMPLE_PATTERN = re.compile(
    r"^(?:\(\?u\))?(?P<start>\\b)?(?P<first>\\w|\[[^\]\[]+\])(?P<second>\\w|\[[^\]\[]+\])?\+(?P<end>\\b)?$"
)
SUBLINEAR_TABLE = 20_001
"""``log(tf) + 1`` is looked up for counts below this (a 10,000-character text has fewer tokens)."""
PAD = " "
"""What the Tokenizer pads short rows with: never a token (no supported class holds a space)."""
_DOTTED_CAPITAL_I = "\u0130"


@dataclass(frozen=True, slots=True)
class TokenRule:
    """A token pattern as runs of one character class: the class (as a regex) and the minimum length."""

    char_class: str
    min_length: int


def token_rule(pattern: str) -> TokenRule | None:
    """The rule behind ``pattern``, or None when it is not a run of one character class."""
    match = _SIMPLE_PATTERN.match(pattern)
    if match is None:
        return None
    first, second = match["first"], match["second"]
    anchored = match["start"] is not None or match["end"] is not None
    if (second is not None and second != first) or (anchored and first != r"\w"):
        return None
    return TokenRule(first, 2 if second else 1)


@cache
def _word_characters(char_class: str, lowercase: bool) -> tuple[tuple[int, int], ...]:
    """Code-point ranges of the characters that are tokens' characters once lowercased."""
    matcher = re.compile(char_class)
    ranges: list[tuple[int, int]] = []
    start = None
    for code in range(sys.maxunicode + 2):
        char = chr(code) if code <= sys.maxunicode and not 0xD800 <= code <= 0xDFFF else ""
        shown = char.lower() if lowercase else char
        inside = len(shown) == 1 and matcher.fullmatch(shown) is not None
        if inside and start is None:
            start = code
        elif not inside and start is not None:
            ranges.append((start, code - 1))
            start = None
    return tuple(ranges)


def _ends_token(char_class: str) -> bool:
    """Whether 'İ' lowercases to a token character followed by a non-token one (U+0307)."""
    lowered = _DOTTED_CAPITAL_I.lower()
    return re.fullmatch(char_class, lowered[0]) is not None and re.fullmatch(char_class, lowered[1]) is None


def re2_pattern(rule: TokenRule, lowercase: bool) -> str:
    """The RE2 pattern that finds, in the original text, the tokens scikit-learn finds."""
    ranges = _word_characters(rule.char_class, lowercase)
    body = "".join(f"\\x{{{a:X}}}" if a == b else f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in ranges)
    runs = f"[{body}]{{{rule.min_length},}}"
    if not lowercase or not _ends_token(rule.char_class):
        return runs
    closing = f"[{body}]{{{rule.min_length - 1},}}\\x{{{ord(_DOTTED_CAPITAL_I):X}}}"
    return f"{closing}|{runs}"


# --- the converter ----------------------------------------------------------------------------


def vectorizer_shape(operator: Any) -> None:
    """Float64 ``[N, len(vocabulary_)]``."""
    set_double_output(operator, len(operator.raw_operator.vocabulary_))


def ngram_pool(vocabulary: dict[str, int]) -> dict[str, Any]:
    """TfIdfVectorizer's pool: the n-grams split into tokens, grouped by n, with their columns.

    ``ngram_counts`` holds where the 1-grams, 2-grams, ... start in ``pool_strings`` (in tokens).
    """
    grams = sorted((len(gram.split(" ")), gram, column) for gram, column in vocabulary.items())
    lengths = [n for n, _, _ in grams]
    return {
        "pool_strings": [token for _, gram, _ in grams for token in gram.split(" ")],
        "ngram_counts": [sum(n for n in lengths if n < size) for size in range(1, lengths[-1] + 1)],
        "ngram_indexes": [column for _, _, column in grams],
    }


def count_ngrams(g: GraphBuilder, text: str, model: Any) -> str:
    """Float64 ``[N, V]`` counts of the vocabulary's n-grams in each row of ``text`` (strings)."""
    rule = token_rule(model.token_pattern)
    if rule is None:  # refusals.py refuses these before conversion
        raise ValueError(f"token_pattern {model.token_pattern!r} is not a run of one character class")
    flat = g.node("Reshape", text, g.constant("flat", [-1], TensorProto.INT64))
    tokens = g.node(
        "Tokenizer",
        flat,
        domain="com.microsoft",
        tokenexp=re2_pattern(rule, model.lowercase),
        mark=0,
        mincharnum=1,
        pad_value=PAD,
    )
    tokens = _with_pad_column(g, tokens)  # a row of no tokens gives [N, 0], which StringNormalizer rejects
    if model.lowercase:
        shape = g.node("Shape", tokens)
        lowered = g.node(
            "StringNormalizer",
            g.node("Reshape", tokens, g.constant("flat", [-1], TensorProto.INT64)),
            case_change_action="LOWER",
            is_case_sensitive=0,
            locale="C.UTF-8",
        )
        tokens = g.node("Reshape", lowered, shape)
    counts = g.node(
        "TfIdfVectorizer",
        tokens,
        mode="TF",
        min_gram_length=int(model.ngram_range[0]),
        max_gram_length=int(model.ngram_range[1]),
        max_skip_count=0,
        **ngram_pool(model.vocabulary_),
    )
    return g.node("Cast", counts, to=TensorProto.DOUBLE)


def _with_pad_column(g: GraphBuilder, tokens: str) -> str:
    """``tokens`` ``[N, T]`` with one more column of padding, so that it is never empty."""
    pad_value = g.constant("pad", np.array([[PAD]], dtype=object), TensorProto.STRING)
    pad = g.node("Expand", pad_value, g.column_shape(tokens))
    return g.node("Concat", tokens, pad, axis=1)


def _sublinear(g: GraphBuilder, counts: str) -> str:
    """``log(tf) + 1`` where ``tf > 0`` (numpy's values for counts below the table's size), else 0."""
    table = np.zeros(SUBLINEAR_TABLE)
    table[1:] = np.log(np.arange(1, SUBLINEAR_TABLE, dtype=np.float64)) + 1.0
    inside = g.node("Less", counts, g.constant("table_size", [float(SUBLINEAR_TABLE)]))
    index = g.node("Cast", g.node("Where", inside, counts, g.constant("zero", [0.0])), to=TensorProto.INT64)
    looked_up = g.node("Gather", g.constant("log_table", table), index, axis=0)
    computed = g.node("Add", g.node("Log", counts), g.constant("one", [1.0]))
    return g.node("Where", inside, looked_up, computed)


def _normalize(g: GraphBuilder, X: str, norm: str) -> str:
    """Rows divided by their l1 or l2 norm; rows of zeros stay as they are, as in ``normalize``."""
    axis = g.constant("axis", [1], TensorProto.INT64)
    if norm == "l2":
        size = g.node("Sqrt", g.node("ReduceSumSquare", X, axis, keepdims=1))
    else:
        size = g.node("ReduceSum", g.node("Abs", X), axis, keepdims=1)
    is_zero = g.node("Equal", size, g.constant("zero", [0.0]))
    return g.node("Div", X, g.node("Where", is_zero, g.constant("one", [1.0]), size))


def convert_vectorizer(scope: Any, operator: Any, container: Any) -> None:
    """CountVectorizer or TfidfVectorizer, word n-grams, as ``transform`` computes them."""
    g, model = GraphBuilder(scope, container), operator.raw_operator
    X = count_ngrams(g, operator.inputs[0].full_name, model)
    if model.binary:
        X = g.node("Min", X, g.constant("one", [1.0]))
    if isinstance(model, TfidfVectorizer):
        if model.sublinear_tf:
            X = _sublinear(g, X)
        if model.use_idf:
            X = g.node("Mul", X, g.constant("idf", [model.idf_]))
        if model.norm:
            X = _normalize(g, X, model.norm)
    g.node("Identity", X, output=operator.outputs[0].full_name)
