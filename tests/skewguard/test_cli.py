"""The CLI as a user runs it: demo data, packaging a user's own pickled pipeline, listing."""

from __future__ import annotations

import json
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from skewguard.bentos.images import encode_png
from skewguard.bentos.store import load_model
from skewguard.bentos.transforms import ImageFeatures, make_text_vectorizer
from skewguard.cli import cli, main
from tests.conftest import EXAMPLES


def _user_files(folder: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    n = 300
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    X = pd.DataFrame(
        {
            "amount": rng.normal(50, 10, n),
            "kind": rng.choice(["a", "b"], n),
            "note": rng.choice(["late parcel", "fine thanks", "broken box"], n),
            "photo": list(images),
        }
    )
    y = ((X["amount"] > 50) ^ (X["note"] == "broken box")).astype(int)
    pipeline = Pipeline(
        [
            (
                "columns",
                ColumnTransformer(
                    [
                        ("num", StandardScaler(), ["amount"]),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["kind"]),
                        ("text", make_text_vectorizer(), "note"),
                        ("image", ImageFeatures(grid=2), "photo"),
                    ]
                ),
            ),
            ("model", LogisticRegression(max_iter=500)),
        ]
    ).fit(X, y)
    pipeline_file = folder / "pipeline.pkl"
    pipeline_file.write_bytes(pickle.dumps(pipeline))
    sample = X.iloc[:80].assign(photo=[encode_png(img) for img in images[:80]], label=y[:80])
    sample_file = folder / "sample.parquet"
    sample.to_parquet(sample_file)
    return pipeline_file, sample_file


def test_package_a_users_pickled_pipeline(tmp_path: Path) -> None:
    pipeline_file, sample_file = _user_files(tmp_path)
    args = ["package", "--pipeline", str(pipeline_file), "--sample", str(sample_file)]
    result = CliRunner().invoke(cli, [*args, "--name", "user-model", "--target", "label"])
    assert result.exit_code == 0, result.output
    tag = result.output.strip().splitlines()[-1]
    stored = load_model(tag)
    assert stored.spec.get("photo").kind == "image"
    assert stored.spec.get("note").kind == "text"
    assert stored.parity["passed"] is True
    assert 0.0 <= stored.metrics["accuracy"] <= 1.0
    listing = CliRunner().invoke(cli, ["models", "user-model"])
    assert tag in listing.output


def test_package_seeds_the_probes_from_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline_file, sample_file = _user_files(tmp_path)
    monkeypatch.setenv("SKEWGUARD_PARITY_PROBE_SEED", "7")
    args = ["package", "--pipeline", str(pipeline_file), "--sample", str(sample_file), "--name", "seeded"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert load_model(result.output.strip().splitlines()[-1]).parity["probe_seed"] == 7


def test_unknown_target_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline_file, sample_file = _user_files(tmp_path)
    argv = ["skewguard", "package", "--pipeline", str(pipeline_file), "--sample", str(sample_file)]
    monkeypatch.setattr("sys.argv", [*argv, "--name", "x", "--target", "nope"])
    with pytest.raises(SystemExit) as stopped:
        main()
    assert stopped.value.code == 2
    assert "--target 'nope' is not a column" in capsys.readouterr().err


def test_bad_setting_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SKEWGUARD_PARITY_TOLERANCE", "-1")
    monkeypatch.setattr("sys.argv", ["skewguard", "models"])
    with pytest.raises(SystemExit) as stopped:
        main()
    assert stopped.value.code == 2
    assert "SKEWGUARD_PARITY_TOLERANCE" in capsys.readouterr().err


def test_demo_data_writes_and_skips_when_present(tmp_path: Path) -> None:
    args = ["demo-data", "--dir", str(tmp_path), "--rows", "300"]
    (tmp_path / "returns_data.py").write_text((EXAMPLES / "returns" / "returns_data.py").read_text())
    (tmp_path / "returns_drawing.py").write_text((EXAMPLES / "returns" / "returns_drawing.py").read_text())
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert (tmp_path / "data" / "orders.parquet").exists()
    assert "wrote a request to try" in first.output
    again = CliRunner().invoke(cli, [*args, "--if-missing"])
    assert "already" in again.output


def test_an_example_is_copied_as_a_project_with_its_data(tmp_path: Path) -> None:
    done = CliRunner().invoke(
        cli, ["examples", "copy", "bike-hires", str(tmp_path / "mine"), "--rows", "200"]
    )
    assert done.exit_code == 0, done.output
    assert (tmp_path / "mine" / "cascade.yaml").is_file()
    assert (tmp_path / "mine" / "data" / "hires.parquet").is_file()
    assert f"skewguard train -f {tmp_path / 'mine' / 'cascade.yaml'}" in done.output
    again = CliRunner().invoke(cli, ["examples", "copy", "bike-hires", str(tmp_path / "mine")])
    assert again.exit_code != 0
    listed = CliRunner().invoke(cli, ["examples", "list"])
    assert "returns" in listed.output
    assert "bike-hires" in listed.output


def test_schema_prints_the_cascade_files_json_schema() -> None:
    done = CliRunner().invoke(cli, ["schema"])
    assert done.exit_code == 0
    assert json.loads(done.output)["title"] == "skewguard cascade file"


def test_cascades_are_composed_listed_promoted_and_rolled_back(tmp_path: Path) -> None:
    from returns_data import generate_demo_data

    from tests.conftest import package_cascade_models

    tags = package_cascade_models(
        generate_demo_data(n_orders=600, n_customers=60, seed=9), "clicomp", n_sample=30
    )
    compose = [
        "cascade",
        "compose",
        "clicomp",
        "--router",
        tags["router"],
        "--route",
        "1=reseller",
        "--route",
        "0=retail",
        "--rule",
        "0.4",
        "--positive-class",
        "1",
        "--branch",
        f"reseller={tags['reseller']}",
        "--branch",
        f"retail={tags['retail']}",
    ]
    first = CliRunner().invoke(cli, [*compose, "--promote"])
    assert first.exit_code == 0, first.output
    second = CliRunner().invoke(cli, compose)
    first_tag, second_tag = first.output.split()[0], second.output.split()[0]
    assert "(candidate)" in second.output
    listed = CliRunner().invoke(cli, ["cascade", "list"])
    assert f"champion {first_tag}" in listed.output
    assert CliRunner().invoke(cli, ["cascade", "promote", second_tag]).exit_code == 0
    shown = CliRunner().invoke(cli, ["cascade", "show", "clicomp"])
    manifest = json.loads(shown.output)
    assert (manifest["tag"], manifest["status"], manifest["router"]["threshold"]) == (
        second_tag,
        "champion",
        0.4,
    )
    back = CliRunner().invoke(cli, ["cascade", "rollback", "clicomp"])
    assert back.exit_code == 0, back.output
    assert f"{first_tag} is the champion of clicomp again" in back.output
    bad = CliRunner().invoke(cli, ["cascade", "compose", "x", "--branch", "oops"])
    assert "--branch 'oops': expected KEY=VALUE" in (bad.output + str(bad.exception))


def test_a_version_is_attached_as_shadow_or_canary_listed_and_detached(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from skewguard.bentos.manifest import CascadeManifest, RouterRef, promote, save_manifest
    from skewguard.bentos.spec import FieldSpec, InputSpec

    spec = InputSpec(fields=(FieldSpec("price", "numeric"),), entity_key="customer_id")
    first, second = (
        save_manifest(
            CascadeManifest(
                name="clivariant",
                router=RouterRef(tag="r:v1", routes={"1": "a", "0": "b"}, threshold=t, positive_class="1"),
                branches={"a": "a:v1", "b": "b:v1"},
                entity_key="customer_id",
                input_spec=spec.to_dict(),
            )
        )
        for t in (0.4, 0.6)
    )
    promote(first)
    shadow = CliRunner().invoke(cli, ["cascade", "shadow", "clivariant", second, "--fraction", "0.5"])
    assert shadow.exit_code == 0, shadow.output
    assert f"{second} shadows {first} on 50% of the requests" in shadow.output
    listed = CliRunner().invoke(cli, ["cascade", "list"]).output
    assert f"shadow {second} at 0.5" in listed
    canary = CliRunner().invoke(cli, ["cascade", "canary", "clivariant", second, "--share", "0.1"])
    assert "answers 10% of the entities of clivariant" in canary.output
    detached = CliRunner().invoke(cli, ["cascade", "detach", "clivariant"])
    assert f"canary {second} detached from clivariant" in detached.output
    monkeypatch.setattr("sys.argv", ["skewguard", "cascade", "canary", "clivariant", second, "--share", "1"])
    with pytest.raises(SystemExit) as stopped:
        main()
    assert stopped.value.code == 2
    assert "a canary of every key is a promotion" in capsys.readouterr().err


def test_compare_without_a_variant_in_the_log_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from skewguard.bentos.manifest import CascadeManifest, promote, save_manifest
    from skewguard.bentos.spec import FieldSpec, InputSpec

    spec = InputSpec(fields=(FieldSpec("price", "numeric"),))
    promote(
        save_manifest(CascadeManifest(name="clicompare", branches={"m": "m:v1"}, input_spec=spec.to_dict()))
    )
    monkeypatch.setenv("SKEWGUARD_LOG_URL", f"sqlite:///{tmp_path / 'log.db'}")
    monkeypatch.setattr("sys.argv", ["skewguard", "compare", "clicompare", "--no-labels"])
    with pytest.raises(SystemExit) as stopped:
        main()
    assert stopped.value.code == 2
    assert "attach one (`skewguard cascade shadow|canary`)" in capsys.readouterr().err


def test_log_prune_deletes_what_is_older_than_the_age_given(tmp_path: Path) -> None:
    import asyncio
    import dataclasses
    import time

    from skewguard.gateway.predlog import PredictionLog
    from skewguard.predictionlog.records import read_records
    from tests.gateway.test_predlog import make_records

    url = f"sqlite:///{tmp_path / 'log.db'}"
    now = time.time()
    ages = [40, 31, 29, 1]  # days
    records = [
        dataclasses.replace(r, ts=now - age * 86_400)
        for r, age in zip(make_records(len(ages), rows_per_request=1), ages, strict=True)
    ]

    async def write() -> None:
        log = PredictionLog.open(url)
        await log.start()
        log.submit(records)
        await log.drain()

    asyncio.run(write())
    env = {"SKEWGUARD_HOME": str(tmp_path), "SKEWGUARD_LOG_URL": url, "SKEWGUARD_LOG_RETENTION_DAYS": None}
    runner = CliRunner()
    pruned = runner.invoke(cli, ["log", "prune", "--older-than", "30d"], env=env)
    assert pruned.exit_code == 0, pruned.output
    assert "deleted 2 records" in pruned.output
    assert "2 remain" in pruned.output
    assert [r["request_id"] for r in read_records(url)] == [r.request_id for r in records[2:]]

    by_setting = runner.invoke(cli, ["log", "prune"], env={**env, "SKEWGUARD_LOG_RETENTION_DAYS": "2"})
    assert by_setting.exit_code == 0, by_setting.output
    assert "deleted 1 record served" in by_setting.output

    no_unit = runner.invoke(cli, ["log", "prune", "--older-than", "30"], env=env)
    assert no_unit.exit_code == 2
    assert "--older-than" in no_unit.output
    assert "30d" in no_unit.output
    no_age = runner.invoke(cli, ["log", "prune"], env=env)
    assert no_age.exit_code == 2
    assert "SKEWGUARD_LOG_RETENTION_DAYS" in no_age.output
    assert len(read_records(url)) == 1


def test_the_curl_serve_prints_sends_the_token_when_one_is_set(tmp_path: Path) -> None:
    from skewguard.cli_ops import _ready_message
    from skewguard.gateway.settings import GatewaySettings

    settings = GatewaySettings(home=tmp_path, api_token="s3cret-token")
    (tmp_path / "requests").mkdir()
    (tmp_path / "requests" / "demo.json").write_text("{}")
    curl = next(line for line in _ready_message(settings, ["demo"]).splitlines() if "curl" in line)
    words = subprocess.run(
        ["bash", "-c", f"set -- {curl[curl.index('curl') :]}; printf '%s\\n' \"$@\""],
        env={"SKEWGUARD_API_TOKEN": "s3cret-token", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert "authorization: Bearer s3cret-token" in words
    assert any(word.startswith("@") and word.endswith("demo.json") for word in words)
