"""The Bento service: any packaged model, served by tag as POST /predict (see ``skewguard.bentos.bento``).

Glue only. Bad input is a ``SkewguardError`` raised by the runner; it is answered with the
error's own status (422, or 413 for oversized values) and its ``{"code", "message",
"field"}`` body through the request context. A body that is not JSON or not shaped
``{"rows": [{...}, ...]}`` never reaches this code: BentoML's pydantic validation answers
400 with ``detail[].loc`` naming the field (``["rows"]``, ``["rows", 0]``).
"""

from __future__ import annotations

from typing import Any

import bentoml

from skewguard.bentos.bento import served_model_tag
from skewguard.bentos.runner import OnnxRunner
from skewguard.bentos.store import load_model
from skewguard.errors import InputError


@bentoml.service(name="skewguard_model", traffic={"timeout": 30})
class OnnxModelService:
    """One ONNX graph from the model store behind a typed JSON API."""

    model = bentoml.models.BentoModel(served_model_tag())

    def __init__(self) -> None:
        self.runner = OnnxRunner(load_model(str(self.model.tag)))

    @bentoml.api  # type: ignore[untyped-decorator]  # _bentoml_sdk ships no type information
    async def predict(self, rows: list[dict[str, Any]], ctx: bentoml.Context) -> dict[str, Any]:
        """Predict 1..N raw rows (images as base64 strings)."""
        try:
            predictions = self.runner.predict_rows(rows)
        except InputError as exc:
            ctx.response.status_code = exc.status_code
            return exc.to_dict()
        return {"model": self.runner.model_tag, "predictions": predictions}

    @bentoml.api  # type: ignore[untyped-decorator]
    async def spec(self) -> dict[str, Any]:
        """The input spec: every field a row must carry, its kind and whether null is accepted."""
        return {"model": self.runner.model_tag, "spec": self.runner.spec.to_dict()}
