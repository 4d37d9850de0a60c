"""Replay: the cascade's own answers on the reference rows, from its stored ONNX graphs.

The training set holds labels, not what the cascade answers. To compare the served
prediction, probabilities and route share with training time — and to split the reference
by branch at all — the monitor runs the cascade over the reference rows the way the gateway
does (``skewguard.bentos.routing``): online features the training set lacks get the spec's
defaults (the gateway serves those), the manifest's rule picks each row's branch, and that
branch's model answers. onnxruntime only; nothing is unpickled.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from skewguard.bentos.inputs import encode_frame
from skewguard.bentos.manifest import CascadeManifest, RouterRef
from skewguard.bentos.routing import run_cascade
from skewguard.bentos.runner import OnnxRunner
from skewguard.bentos.spec import InputSpec
from skewguard.monitoring.frames import Outputs


def load_runners(manifest: CascadeManifest) -> tuple[OnnxRunner | None, dict[str, OnnxRunner]]:
    """The router's runner (None without one) and each branch's, read and verified from the store."""
    branches = {branch: OnnxRunner.load(tag) for branch, tag in manifest.branches.items()}
    return (OnnxRunner.load(manifest.router.tag) if manifest.router else None), branches


def output_classes(branches: Mapping[str, OnnxRunner]) -> tuple[str, ...]:
    """The classes the branches' classifiers answer (as probability keys), in order; none for regressors."""
    return tuple(dict.fromkeys(str(c) for runner in branches.values() for c in runner.classes_))


def replay_cascade(manifest: CascadeManifest, rows: pd.DataFrame) -> Outputs:
    """The answers of the cascade ``manifest`` (models read and verified from the store) on ``rows``."""
    router, branches = load_runners(manifest)
    return replay(manifest.spec(), manifest.router, router, branches, rows)


def replay(
    spec: InputSpec,
    rule: RouterRef | None,
    router: OnnxRunner | None,
    branches: Mapping[str, OnnxRunner],
    rows: pd.DataFrame,
) -> Outputs:
    """Route ``rows`` with ``router`` and ``rule`` (all to the one branch without), answer each there."""
    if rows.empty:
        return Outputs((), (), ())
    filled = rows.copy()
    for feature in spec.online_features:
        if feature.name in filled.columns:
            filled[feature.name] = filled[feature.name].fillna(feature.default)
    batch = encode_frame(spec, filled)
    results = run_cascade(rule, router, branches, batch)
    return Outputs(
        tuple(r.prediction for r in results),
        tuple(r.probabilities for r in results),
        tuple(r.route for r in results),
    )
