"""Replay: the cascade's own answers on the reference rows, from its stored ONNX graphs.

The training set holds labels, not what the cascade answers. To compare the served
prediction, P(positive class) and route share with training time — and to split the
reference by branch at all — the monitor runs the cascade over the reference rows the way
the gateway does: online features the training set lacks get the spec's defaults (the
gateway serves those), the router's P(class "1") at or above the manifest's threshold
picks the positive branch, and that branch's specialist answers. onnxruntime only (about
50 ms for 2,000 rows of the demo cascade); nothing is unpickled.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from skewguard.bentos.inputs import encode_frame
from skewguard.bentos.manifest import CascadeManifest, RouterRef
from skewguard.bentos.runner import OnnxRunner, run_cascade
from skewguard.bentos.spec import InputSpec
from skewguard.monitoring.frames import Outputs


def replay_cascade(manifest: CascadeManifest, rows: pd.DataFrame) -> Outputs:
    """The answers of the cascade ``manifest`` (models read and verified from the store) on ``rows``."""
    runners = {role: OnnxRunner.load(tag) for role, tag in manifest.model_tags().items()}
    router = runners.pop("router")
    return replay(manifest.spec(), manifest.router, router, runners, rows)


def replay(
    spec: InputSpec,
    rule: RouterRef,
    router: OnnxRunner,
    branches: Mapping[str, OnnxRunner],
    rows: pd.DataFrame,
) -> Outputs:
    """Route ``rows`` with ``router`` and ``rule``, answer each with its branch's runner."""
    if rows.empty:
        return Outputs((), (), ())
    filled = rows.copy()
    for feature in spec.online_features:
        if feature.name in filled.columns:
            filled[feature.name] = filled[feature.name].fillna(feature.default)
    batch = encode_frame(spec, filled)
    results = run_cascade(rule, router, branches, batch)
    return Outputs(
        tuple(r.label for r in results),
        tuple(r.probabilities for r in results),
        tuple(r.route for r in results),
    )
