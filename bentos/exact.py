"""The exact converters: which scikit-learn estimator converts how, and what it computes in ONNX.

``EXACT_CONVERTERS`` maps an estimator class to skewguard's own shape calculator and
converter (given to skl2onnx for one conversion, never registered globally) and to a
sentence saying what its graph computes. Estimators not listed convert with skl2onnx's
own converter; ``describe_conversion`` says which one a step got.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import ElasticNet, Lasso, LinearRegression, LogisticRegression, Ridge
from sklearn.preprocessing import (
    FunctionTransformer,
    MaxAbsScaler,
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    PolynomialFeatures,
    RobustScaler,
    StandardScaler,
    TargetEncoder,
)
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from skewguard.bentos import encoders, linear, preprocessing, text, trees

Converter = Callable[[Any, Any, Any], None]
ShapeCalculator = Callable[[Any], None]


@dataclass(frozen=True, slots=True)
class ExactConverter:
    """skewguard's converter of one estimator class, and what its graph computes."""

    shape: ShapeCalculator
    convert: Converter
    how: str


_FOREST = "TreeEnsemble (ai.onnx.ml 5): X cast to float32 as scikit-learn does, float64 thresholds"
_HIST = "TreeEnsemble (ai.onnx.ml 5): float64 X and thresholds, NaN and categorical splits as fitted"

_P = preprocessing
_TABLE = "Equal + Gather in the table the encoder fills (unseen values as the encoder treats them)"
_LINEAR = "float64 MatMul, Add (then Sigmoid or Softmax for probabilities)"
_TEXT = "Tokenizer (RE2 class of Python's word characters), StringNormalizer, n-gram counts, float64 tf-idf"
EXACT_CONVERTERS: dict[type, ExactConverter] = {
    StandardScaler: ExactConverter(_P.same_width_shape, _P.convert_standard_scaler, "float64 Sub, Div"),
    MinMaxScaler: ExactConverter(_P.same_width_shape, _P.convert_minmax_scaler, "float64 Mul, Add"),
    RobustScaler: ExactConverter(_P.same_width_shape, _P.convert_robust_scaler, "float64 Sub, Div"),
    MaxAbsScaler: ExactConverter(_P.same_width_shape, _P.convert_maxabs_scaler, "float64 Div"),
    SimpleImputer: ExactConverter(_P.imputer_shape, _P.convert_simple_imputer, "float64 Where(IsNaN)"),
    PolynomialFeatures: ExactConverter(
        _P.polynomial_shape, _P.convert_polynomial_features, "float64 Mul, degree by degree"
    ),
    _P.NonFiniteGuard: ExactConverter(
        _P.guard_shape, _P.convert_guard, "rows with NaN or infinity answer NaN, as scikit-learn raises"
    ),
    FunctionTransformer: ExactConverter(
        _P.function_shape, _P.convert_function_transformer, "float64 elementwise function"
    ),
    OneHotEncoder: ExactConverter(encoders.encoder_shape, encoders.convert_encoder, _TABLE),
    OrdinalEncoder: ExactConverter(encoders.encoder_shape, encoders.convert_encoder, _TABLE),
    TargetEncoder: ExactConverter(encoders.encoder_shape, encoders.convert_encoder, _TABLE),
    CountVectorizer: ExactConverter(text.vectorizer_shape, text.convert_vectorizer, _TEXT),
    TfidfVectorizer: ExactConverter(text.vectorizer_shape, text.convert_vectorizer, _TEXT),
    LogisticRegression: ExactConverter(trees.classifier_shape, linear.convert_logistic_regression, _LINEAR),
    LinearRegression: ExactConverter(trees.regressor_shape, linear.convert_linear_regressor, _LINEAR),
    Ridge: ExactConverter(trees.regressor_shape, linear.convert_linear_regressor, _LINEAR),
    Lasso: ExactConverter(trees.regressor_shape, linear.convert_linear_regressor, _LINEAR),
    ElasticNet: ExactConverter(trees.regressor_shape, linear.convert_linear_regressor, _LINEAR),
    DecisionTreeClassifier: ExactConverter(trees.classifier_shape, trees.convert_forest_classifier, _FOREST),
    RandomForestClassifier: ExactConverter(trees.classifier_shape, trees.convert_forest_classifier, _FOREST),
    ExtraTreesClassifier: ExactConverter(trees.classifier_shape, trees.convert_forest_classifier, _FOREST),
    DecisionTreeRegressor: ExactConverter(trees.regressor_shape, trees.convert_forest_regressor, _FOREST),
    RandomForestRegressor: ExactConverter(trees.regressor_shape, trees.convert_forest_regressor, _FOREST),
    ExtraTreesRegressor: ExactConverter(trees.regressor_shape, trees.convert_forest_regressor, _FOREST),
    GradientBoostingClassifier: ExactConverter(
        trees.classifier_shape, trees.convert_boosting_classifier, _FOREST + ", sums in scikit-learn's order"
    ),
    GradientBoostingRegressor: ExactConverter(
        trees.regressor_shape, trees.convert_boosting_regressor, _FOREST + ", sums in scikit-learn's order"
    ),
    HistGradientBoostingClassifier: ExactConverter(
        trees.classifier_shape, trees.convert_hist_classifier, _HIST
    ),
    HistGradientBoostingRegressor: ExactConverter(trees.regressor_shape, trees.convert_hist_regressor, _HIST),
}


def custom_converters() -> tuple[dict[type, Converter], dict[type, ShapeCalculator]]:
    """The ``custom_conversion_functions`` and ``custom_shape_calculators`` for skl2onnx."""
    return (
        {cls: entry.convert for cls, entry in EXACT_CONVERTERS.items()},
        {cls: entry.shape for cls, entry in EXACT_CONVERTERS.items()},
    )


def describe_conversion(estimator: Any, *, final: bool = False) -> str:
    """How ``estimator`` converts: skewguard's exact converter, or skl2onnx's own.

    ``final``: it is the pipeline's last step, behind the guard when it rejects NaN and infinity.
    """
    entry = EXACT_CONVERTERS.get(type(estimator))
    how = entry.how if entry else f"skl2onnx converter for {type(estimator).__name__}"
    if isinstance(estimator, FunctionTransformer):
        func = estimator.func
        how = "identity (columns passed through)" if func is None else f"float64 {func.__name__}"
    if final and preprocessing.rejects_non_finite(estimator):
        how += "; a row with NaN or infinity answers NaN, as scikit-learn raises"
    return how
