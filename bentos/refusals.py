"""Steps that cannot convert exactly: refused before conversion, naming the step, why, and a remedy.

Each rule looks at one fitted estimator of the pipeline (nested pipelines, column
transformers and feature unions are walked) and returns the reason and a remedy that
skewguard supports — an option of the same estimator, or a drop-in step — or None.
``check_convertible`` raises ``UnsupportedStepError`` for the first step a rule refuses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from sklearn.base import is_classifier
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.preprocessing import FunctionTransformer

from skewguard.bentos.text import token_rule
from skewguard.errors import UnsupportedStepError

Refusal = tuple[str, str]
"""(why, remedy)"""
Rule = Callable[[Any], Refusal | None]


def walk_steps(estimator: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every estimator inside ``estimator`` with its path (``columns/text``), outermost first."""
    yield path or type(estimator).__name__, estimator
    children: list[tuple[str, Any]] = list(getattr(estimator, "steps", []))
    children += [(name, t) for name, t, *_ in getattr(estimator, "transformers_", [])]
    children += list(getattr(estimator, "transformer_list", []))
    for name, child in children:
        if child in ("drop", "passthrough", None):
            continue
        yield from walk_steps(child, f"{path}/{name}" if path else str(name))


def _no_probabilities(estimator: Any) -> Refusal | None:
    if hasattr(estimator, "steps") or not is_classifier(estimator) or hasattr(estimator, "predict_proba"):
        return None
    name = type(estimator).__name__
    return (
        f"{name} has no predict_proba, and a packaged classifier answers probabilities.",
        f"wrap it as sklearn.calibration.CalibratedClassifierCV({name}(...)), which converts.",
    )


def _text_vectorizer(estimator: Any) -> Refusal | None:
    if not isinstance(estimator, CountVectorizer):  # TfidfVectorizer is one too
        return None
    name = type(estimator).__name__
    custom = [k for k in ("preprocessor", "tokenizer", "strip_accents") if getattr(estimator, k) is not None]
    if estimator.analyzer != "word":
        why = f"analyzer={estimator.analyzer!r} has no ONNX tokenizer that splits like scikit-learn."
        return why, f"{name}(analyzer='word'), optionally with ngram_range, converts exactly."
    if custom:
        why = f"{', '.join(custom)} run Python code no ONNX graph can hold."
        return why, f"{name} with {', '.join(f'{k}=None' for k in custom)} (the defaults) converts exactly."
    if token_rule(estimator.token_pattern) is None:
        why = f"token_pattern {estimator.token_pattern!r} is not a run of one character class."
        remedy = (
            "the default token_pattern, or one like r'(?u)\b\\w+\b' or r'[a-zA-Z0-9_]+', converts exactly."
        )
        return why, remedy
    if estimator.stop_words is not None:
        why = "stop words are removed before n-grams are formed, which the ONNX n-gram counter cannot do."
        return (
            why,
            f"{name}(stop_words=None), optionally with max_df to drop frequent words, converts exactly.",
        )
    return None


RULES: tuple[Rule, ...] = (_no_probabilities, _text_vectorizer)

INEXACT_FUNCTIONS = (np.log, np.log1p, np.exp)
"""onnxruntime's Log and Exp differ from numpy's in the last bit for about one value in five."""


def _logged_before_hist(pipeline: Any) -> tuple[str, Refusal] | None:
    """A log or exp FunctionTransformer whose float64 output a HistGradientBoosting model splits.

    Right before the model (and without native categorical features), the tree converter
    pulls the thresholds back through the function instead (``trees.pull_back``).
    """
    steps = list(getattr(pipeline, "steps", []))
    if not steps or not type(steps[-1][1]).__name__.startswith("HistGradientBoosting"):
        return None
    model, before = steps[-1][1], steps[-2][1] if len(steps) > 1 else None
    if isinstance(before, FunctionTransformer) and getattr(model, "_preprocessor", None) is None:
        return None
    inner = [(path, step) for name, top in steps[:-1] for path, step in walk_steps(top, str(name))]
    if any(type(step).__name__ == "CastTransformer" for _, step in inner):
        return None  # float32 values: a last-bit difference no longer reaches the comparison
    for path, step in inner:
        if isinstance(step, FunctionTransformer) and step.func in INEXACT_FUNCTIONS:
            function = f"np.{step.func.__name__}"
            why = (
                f"FunctionTransformer({function}) feeds {type(steps[-1][1]).__name__}, which compares "
                "float64 values with its split thresholds, and onnxruntime's Log and Exp differ from "
                f"numpy's {function} in the last bit: rows at a threshold would flip."
            )
            remedy = (
                f"apply FunctionTransformer({function}) as the step right before the model (its "
                "thresholds are then compared before the function), or drop it: the model's splits "
                "depend only on the order of the values, which the function keeps (refit the pipeline)."
            )
            return path, (why, remedy)
    return None


def check_convertible(pipeline: Any, rules: tuple[Rule, ...] = RULES) -> None:
    """Raise ``UnsupportedStepError`` for the first step of ``pipeline`` a rule refuses."""
    for path, estimator in walk_steps(pipeline):
        for rule in rules:
            refusal = rule(estimator)
            if refusal is not None:
                raise UnsupportedStepError(path, *refusal)
    logged = _logged_before_hist(pipeline)
    if logged is not None:
        raise UnsupportedStepError(logged[0], *logged[1])
