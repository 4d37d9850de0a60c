"""Text vectorizers in the graph find the tokens scikit-learn finds, in any script, and count them the same.

The default ``(?u)\\b\\w\\w+\\b`` with lowercasing, on text mixing accents, combining marks,
'İ', the Kelvin sign, CJK, Arabic, Hebrew, emoji, superscripts and fractions: the graph's
counts and tf-idf values equal scikit-learn's. Patterns that are not runs of one character
class, and options no graph can hold, are refused with a remedy.
"""

from __future__ import annotations

import re
import sys
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.pipeline import make_pipeline

from skewguard.bentos.convert import convert_transform
from skewguard.bentos.inputs import Batch
from skewguard.bentos.parity import make_session
from skewguard.bentos.refusals import check_convertible
from skewguard.bentos.spec import FieldSpec, InputSpec
from skewguard.bentos.text import TokenRule, token_rule
from skewguard.errors import UnsupportedStepError

SPEC = InputSpec(fields=(FieldSpec(name="text", kind="text"),))
ALPHABET = (
    "abcXYZ019_ .,;:!?'-\t\n"
    "éÉßÆøçñÜ\u0301\u0307İı\u212aK"  # accents, combining marks, dotted/dotless i, Kelvin sign
    "日本語東京中文한국어テキスト"  # CJK
    "مرحباشلוםעולם"  # Arabic, Hebrew
    "🚀🔥😀👍🏽❤️"  # emoji, a skin-tone modifier, a variation selector
    "²½Ⅻ٣"  # superscript, fraction, Roman numeral, Arabic-Indic digit
)
CORPUS = [
    "Café crème, naïve FAÇADE — İstanbul & \u212aelvin, don't",
    "東京 日本語のテキスト 🚀🔥 emoji😀word",
    "مرحبا بالعالم שלום עולם ² ½ Ⅻ ٣٣",
    "e\u0301clair cafe\u0301 under_score x y zz",
]
TEXTS = st.text(alphabet=ALPHABET, max_size=40)


def _graph_output(vectorizer: Any, texts: list[str]) -> np.ndarray:
    session = make_session(convert_transform(make_pipeline(vectorizer), SPEC))
    batch = Batch(SPEC, {"text": np.array(texts, dtype=object)[:, None]})
    return np.asarray(session.run(None, batch.to_feeds())[0], dtype=np.float64)


def _sklearn_output(vectorizer: Any, texts: list[str]) -> np.ndarray:
    return np.asarray(vectorizer.transform(texts).toarray(), dtype=np.float64)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(extra=st.lists(TEXTS, min_size=1, max_size=4), probe=st.lists(TEXTS, min_size=1, max_size=4))
def test_default_vectorizers_count_what_scikit_learn_counts(extra: list[str], probe: list[str]) -> None:
    corpus = CORPUS + extra
    if not any(re.search(r"(?u)\b\w\w+\b", text.lower()) for text in corpus):
        return
    for vectorizer in (CountVectorizer(), TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)):
        fitted = vectorizer.fit(corpus)
        texts = corpus + probe
        got, want = _graph_output(fitted, texts), _sklearn_output(fitted, texts)
        assert np.abs(got - want).max() <= 1e-15, [
            t for t, g, w in zip(texts, got, want, strict=True) if (g != w).any()
        ]


def test_rows_without_any_token_count_nothing() -> None:
    fitted = TfidfVectorizer().fit(CORPUS)
    texts = ["", "   ", "🚀🔥", "x y", "!!"]
    assert not _graph_output(fitted, texts).any()
    assert not _sklearn_output(fitted, texts).any()


def test_lowercasing_agrees_with_python_on_every_word_character() -> None:
    words = [
        chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF and re.match(r"\w", chr(c))
    ]
    node = helper.make_node("StringNormalizer", ["X"], ["Y"], case_change_action="LOWER", locale="C.UTF-8")
    value = helper.make_tensor_value_info
    graph = helper.make_graph(
        [node], "lower", [value("X", TensorProto.STRING, [None])], [value("Y", TensorProto.STRING, [None])]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    lowered = ort.InferenceSession(model.SerializeToString()).run(None, {"X": np.array(words, dtype=object)})[
        0
    ]
    differ = [w for w, low in zip(words, lowered, strict=True) if w.lower() != low]
    assert differ == ["\u0130"]  # 'İ': two characters in Python, one in onnxruntime; the tokenizer handles it


@pytest.mark.parametrize(
    ("pattern", "rule"),
    [
        (r"(?u)\b\w\w+\b", TokenRule(r"\w", 2)),
        (r"\b\w+\b", TokenRule(r"\w", 1)),
        (r"[a-zA-Z0-9_]+", TokenRule("[a-zA-Z0-9_]", 1)),
        (r"\w+'\w+", None),
        (r"\b[a-z]+\b", None),
        (r"[a-z][0-9]+", None),
    ],
)
def test_token_patterns_that_are_runs_of_one_class_convert(pattern: str, rule: TokenRule | None) -> None:
    assert token_rule(pattern) == rule


@pytest.mark.parametrize(
    ("vectorizer", "named"),
    [
        (TfidfVectorizer(analyzer="char_wb"), "analyzer='char_wb'"),
        (TfidfVectorizer(strip_accents="unicode"), "strip_accents"),
        (CountVectorizer(token_pattern=r"[a-z]+'[a-z]+"), "token_pattern"),
        (CountVectorizer(stop_words="english"), "stop words"),
    ],
)
def test_what_no_graph_can_hold_is_refused_with_a_remedy(vectorizer: Any, named: str) -> None:
    with pytest.raises(UnsupportedStepError, match="Remedy: ") as refused:
        check_convertible(make_pipeline(vectorizer.fit(CORPUS)))
    assert named in refused.value.reason
