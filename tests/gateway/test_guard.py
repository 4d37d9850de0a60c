"""The skew guard: each flag fires for the value that should raise it, never for training rows."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from returns_data import CATEGORIES, CHANNELS, generate_demo_data
from returns_models import training_frame

from skewguard.bentos.inputs import Batch, encode_frame, encode_rows
from skewguard.bentos.profile import build_profile
from skewguard.bentos.spec import FieldSpec, InputSpec, OnlineFeature
from skewguard.errors import ConfigError
from skewguard.gateway.guard import FLAG_KINDS, GuardConfig, SkewFlag, SkewGuard

ONLINE = ("orders_30d", "return_rate_90d", "account_age_days")


@pytest.fixture(scope="module")
def train() -> pd.DataFrame:
    return training_frame(generate_demo_data(n_orders=1_500, n_customers=150, seed=11))


@pytest.fixture(scope="module")
def spec(train: pd.DataFrame) -> InputSpec:
    fields = (
        *(FieldSpec(name, "numeric") for name in ("price", "quantity", *ONLINE)),
        FieldSpec("category", "categorical", categories=CATEGORIES),
        FieldSpec("channel", "categorical", categories=CHANNELS),
        FieldSpec("order_ts", "datetime"),
        FieldSpec("description", "text"),
        FieldSpec("image", "image", nullable=False),
    )
    online = tuple(OnlineFeature(n, f"customer_stats:{n}", float(train[n].median())) for n in ONLINE)
    return InputSpec(fields=fields, entity_key="customer_id", online_features=online)


@pytest.fixture(scope="module")
def profile(spec: InputSpec, train: pd.DataFrame) -> dict[str, Any]:
    return build_profile(encode_frame(spec, train))


@pytest.fixture(scope="module")
def guard(spec: InputSpec, profile: dict[str, Any]) -> SkewGuard:
    return SkewGuard(spec, profile)


@pytest.fixture(scope="module")
def row(spec: InputSpec, train: pd.DataFrame) -> dict[str, Any]:
    """A typical training row as a client would send it (the median price, so never an edge)."""
    typical = train.iloc[(train["price"] - train["price"].median()).abs().argmin()]
    return {name: typical[name] for name in spec.names}


def _check(guard: SkewGuard, spec: InputSpec, row: dict[str, Any], **changes: Any) -> list[SkewFlag]:
    return guard.check(encode_rows(spec, [{**row, **changes}]))[0]


def _kinds(flags: list[SkewFlag]) -> list[tuple[str, str]]:
    return [(flag.kind, flag.field) for flag in flags]


def test_training_rows_raise_no_flag(guard: SkewGuard, spec: InputSpec, train: pd.DataFrame) -> None:
    flags = guard.check(encode_frame(spec, train))
    assert len(flags) == len(train)
    assert [f for row in flags for f in row] == []


def test_fresh_rows_from_the_same_distribution_are_rarely_flagged(guard: SkewGuard, spec: InputSpec) -> None:
    fresh = training_frame(generate_demo_data(n_orders=600, n_customers=150, seed=12))
    flags = guard.check(encode_frame(spec, fresh))
    assert sum(bool(row) for row in flags) / len(flags) < 0.05


def test_unseen_category_is_flagged_with_its_value(
    guard: SkewGuard, spec: InputSpec, row: dict[str, Any]
) -> None:
    flags = _check(guard, spec, row, category="drones")
    assert _kinds(flags) == [("unseen_category", "category")]
    assert "'drones'" in flags[0].detail
    assert _check(guard, spec, row, category="toys") == []


def test_number_beyond_training_min_or_max_is_out_of_range(
    guard: SkewGuard, spec: InputSpec, row: dict[str, Any], profile: dict[str, Any]
) -> None:
    top = profile["fields"]["price"]["quantiles"]["1.0"]
    above = _check(guard, spec, row, price=top * 10)
    assert _kinds(above) == [("out_of_range", "price")]
    assert "above the training max" in above[0].detail
    below = _check(guard, spec, row, price=-5.0)
    assert "below the training min" in below[0].detail
    assert _check(guard, spec, row, price=top) == []


def test_configured_quantiles_narrow_the_range(
    spec: InputSpec, profile: dict[str, Any], row: dict[str, Any]
) -> None:
    quantiles = profile["fields"]["price"]["quantiles"]
    between = (quantiles["0.99"] + quantiles["1.0"]) / 2  # inside min/max, above the 99th percentile
    wide = SkewGuard(spec, profile)
    narrow = SkewGuard(spec, profile, GuardConfig(range_quantiles=(0.01, 0.99)))
    assert _check(wide, spec, row, price=between) == []
    flags = _check(narrow, spec, row, price=between)
    assert _kinds(flags) == [("out_of_range", "price")]
    assert "0.99 quantile" in flags[0].detail


def test_null_where_training_had_none_is_a_missing_value(
    guard: SkewGuard, spec: InputSpec, row: dict[str, Any]
) -> None:
    flags = _check(guard, spec, row, price=None, channel=None)
    assert _kinds(flags) == [("missing_value", "price"), ("missing_value", "channel")]


def test_missing_online_feature_names_the_default_used(
    guard: SkewGuard, spec: InputSpec, row: dict[str, Any]
) -> None:
    batch = encode_rows(spec, [row, row])
    flags = guard.check(batch, missing_online=[["return_rate_90d"], []])
    assert _kinds(flags[0]) == [("missing_online_feature", "return_rate_90d")]
    default = spec.online_features[1].default
    assert f"{default:,.6g}" in flags[0][0].detail
    assert flags[1] == []
    unknown = guard.check(encode_rows(spec, [row]), missing_online=[["loyalty_tier"]])[0]
    assert _kinds(unknown) == [("missing_online_feature", "loyalty_tier")]
    with pytest.raises(ValueError, match="1 entries for 2 rows"):
        guard.check(batch, missing_online=[[]])


def test_text_of_mostly_unknown_words_is_out_of_vocabulary(
    guard: SkewGuard, spec: InputSpec, row: dict[str, Any]
) -> None:
    flags = _check(guard, spec, row, description="zyxt quorble frimp dress")
    assert _kinds(flags) == [("out_of_vocabulary", "description")]
    assert "3 of 4 tokens (75%)" in flags[0].detail
    assert _check(guard, spec, row, description="glossy slim fit zyxt dress") == []
    unreadable = _check(guard, spec, row, description="日本語の説明")
    assert _kinds(unreadable) == [("out_of_vocabulary", "description")]


def test_share_of_unknown_tokens_is_configurable(
    spec: InputSpec, profile: dict[str, Any], row: dict[str, Any]
) -> None:
    strict = SkewGuard(spec, profile, GuardConfig(oov_share=0.1))
    assert _kinds(_check(strict, spec, row, description="glossy slim fit zyxt dress")) == [
        ("out_of_vocabulary", "description")
    ]


def test_image_far_from_training_statistics_is_flagged(
    guard: SkewGuard, spec: InputSpec, row: dict[str, Any]
) -> None:
    black = np.zeros((32, 32, 3), dtype=np.uint8)  # demo photos: brightness 184 ± 36
    flags = _check(guard, spec, row, image=black)
    assert _kinds(flags) == [("image_stats", "image")]
    assert "brightness 0.0 is 5.1 standard deviations from the training mean 183.6" in flags[0].detail
    red = np.zeros((32, 32, 3), dtype=np.uint8)
    red[..., 0] = 255
    assert _kinds(_check(guard, spec, row, image=red)) == [("image_stats", "image")]


def test_timestamps_after_training_pass_until_the_horizon(
    guard: SkewGuard, spec: InputSpec, row: dict[str, Any], profile: dict[str, Any]
) -> None:
    latest = profile["fields"]["order_ts"]["quantiles"]["1.0"]
    assert _check(guard, spec, row, order_ts=latest + 30 * 86_400) == []
    assert _kinds(_check(guard, spec, row, order_ts=latest + 400 * 86_400)) == [("out_of_range", "order_ts")]
    old = _check(guard, spec, row, order_ts="1999-01-01T00:00:00Z")
    assert "1999-01-01T00:00:00+00:00 is below the training min" in old[0].detail
    milliseconds = _check(guard, spec, row, order_ts=latest * 1000)  # a classic client mistake
    assert _kinds(milliseconds) == [("out_of_range", "order_ts")]


def test_every_flag_is_a_sentence_naming_its_field(
    guard: SkewGuard, spec: InputSpec, row: dict[str, Any]
) -> None:
    flags = _check(guard, spec, row, category="drones", price=1e9, description="zzz", image=np.zeros(3072))
    assert {flag.kind for flag in flags} <= set(FLAG_KINDS)
    assert len(flags) == 4
    for flag in flags:
        assert flag.field in flag.detail
        assert flag.detail.endswith(".")


def test_rejected_returns_the_first_flag_of_a_rejected_kind(
    spec: InputSpec, profile: dict[str, Any], row: dict[str, Any]
) -> None:
    strict = SkewGuard(spec, profile, GuardConfig(reject=frozenset({"unseen_category"})))
    flags = _check(strict, spec, row, price=1e9, category="drones")
    rejected = strict.rejected(flags)
    assert rejected is not None
    assert (rejected.kind, rejected.field) == ("unseen_category", "category")
    assert strict.rejected(_check(strict, spec, row, price=1e9)) is None
    assert SkewGuard(spec, profile).rejected(flags) is None


def test_config_from_strings_parses_settings() -> None:
    config = GuardConfig.from_strings(
        reject=" unseen_category, out_of_range ", range_quantiles="0.01,0.99", image_z="", oov_share=None
    )
    assert config.reject == frozenset({"unseen_category", "out_of_range"})
    assert config.range_quantiles == (0.01, 0.99)
    assert config.image_z == GuardConfig().image_z
    assert GuardConfig.from_strings() == GuardConfig()


@pytest.mark.parametrize(
    ("settings", "setting"),
    [
        ({"reject": "unseen_category,unseen"}, "SKEWGUARD_GUARD_REJECT"),
        ({"range_quantiles": "0.99,0.01"}, "SKEWGUARD_GUARD_RANGE_QUANTILES"),
        ({"range_quantiles": "0.5"}, "SKEWGUARD_GUARD_RANGE_QUANTILES"),
        ({"image_z": "four"}, "SKEWGUARD_GUARD_IMAGE_Z"),
        ({"oov_share": "1.5"}, "SKEWGUARD_GUARD_OOV_SHARE"),
        ({"rejects": "out_of_range"}, "SKEWGUARD_GUARD_REJECTS"),
    ],
)
def test_bad_setting_is_a_config_error_naming_it(settings: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError, match=setting) as caught:
        GuardConfig.from_strings(**settings)
    assert caught.value.field == setting


def test_malformed_profile_is_a_config_error_naming_the_field(
    spec: InputSpec, profile: dict[str, Any]
) -> None:
    broken = {"fields": {**profile["fields"], "price": {"kind": "numeric"}}}
    with pytest.raises(ConfigError, match="'price'") as caught:
        SkewGuard(spec, broken)
    assert caught.value.field == "price"
    wrong_kind = {"fields": {**profile["fields"], "price": profile["fields"]["category"]}}
    with pytest.raises(ConfigError, match="categorical profile for a numeric field"):
        SkewGuard(spec, wrong_kind)
    with pytest.raises(ConfigError, match="'fields'"):
        SkewGuard(spec, {"n_rows": 3})


def test_field_without_profile_is_checked_only_by_its_spec_categories() -> None:
    batch = Batch(
        InputSpec(
            (FieldSpec("price", "numeric"), FieldSpec("category", "categorical", categories=("toys",)))
        ),
        {"price": np.array([[math.inf]]), "category": np.array([["drones"]], dtype=object)},
    )
    guard = SkewGuard(batch.spec, {"fields": {}})
    assert _kinds(guard.check(batch)[0]) == [("unseen_category", "category")]
