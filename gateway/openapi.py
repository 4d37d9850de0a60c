"""The OpenAPI 3.0 document, built from the served cascades' input specs, and the docs page.

The request schema of each cascade lists exactly the fields a client sends (the entity key
and the request fields; online features are fetched, not sent), so a client generator or
a contract tester sees the same rules the gateway enforces.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import swagger_ui_bundle

from skewguard.bentos.inputs import MAX_CATEGORY_CHARS, MAX_EPOCH_SECONDS, MAX_TEXT_CHARS
from skewguard.bentos.spec import FieldSpec
from skewguard.gateway.cascades import LoadedCascade
from skewguard.gateway.predict import DEFAULT_MAX_ROWS, ENTITY_KEY_MAX, ENTITY_KEY_MIN, MAX_STRING_KEY

ERROR = {
    "type": "object",
    "required": ["code", "message"],
    "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string"}},
}
PREDICTION = {
    "type": "object",
    "required": ["prediction", "route", "versions", "features", "defaults_used", "skew_flags"],
    "properties": {
        "prediction": {"description": "A classifier's label, or a regressor's number."},
        "probabilities": {
            "type": "object",
            "additionalProperties": {"type": "number"},
            "description": "A classifier's probability of each class (absent for a regressor).",
        },
        "route": {"type": "string"},
        "router_probability": {"type": "number", "nullable": True},
        "versions": {"type": "object", "additionalProperties": {"type": "string"}},
        "features": {"type": "object", "additionalProperties": {"type": "number", "nullable": True}},
        "defaults_used": {"type": "boolean"},
        "skew_flags": {
            "type": "array",
            "items": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        "variant": {
            "type": "string",
            "enum": ["champion", "canary"],
            "description": "Who answered the row: the champion, or the candidate attached as a canary.",
        },
    },
}
SWAGGER_PAGE = """<!doctype html>
<html><head><title>skewguard gateway API</title><meta charset="utf-8">
<link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui"});</script>
</body></html>"""


def swagger_assets() -> str:
    """Swagger UI's files, shipped in a Python package: the docs page needs no network."""
    return str(swagger_ui_bundle.swagger_ui_path)


def field_schema(spec: FieldSpec) -> dict[str, Any]:
    """JSON schema of one raw field as a client sends it."""
    schema: dict[str, Any]
    if spec.kind == "numeric":
        schema = {"type": "number"}
    elif spec.kind == "datetime":
        text = {
            "type": "string",
            "format": "date-time",
            "description": "ISO-8601; naive = UTC; between 1677-09-21 and 2262-04-11",
            **({"nullable": True} if spec.nullable else {}),
        }
        epoch = {"type": "number", "minimum": -MAX_EPOCH_SECONDS, "maximum": MAX_EPOCH_SECONDS}
        return {"oneOf": [text, epoch | {"description": "epoch seconds, UTC"}]}
    elif spec.kind == "image":
        schema = {"type": "string", "format": "byte", "description": "base64-encoded PNG or JPEG"}
    else:
        limit = MAX_TEXT_CHARS if spec.kind == "text" else MAX_CATEGORY_CHARS
        schema = {"type": "string", "maxLength": limit}
    if spec.nullable and spec.kind != "image":
        schema["nullable"] = True
    return schema


def row_schema(cascade: LoadedCascade) -> dict[str, Any]:
    properties = {name: field_schema(cascade.spec.get(name)) for name in cascade.request_fields}
    key = cascade.manifest.entity_key
    if key and cascade.manifest.entity_key_type == "string":
        properties[key] = {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_STRING_KEY,
            "description": "Entity key for the online features.",
        }
    elif key:
        properties[key] = {
            "type": "integer",
            "minimum": ENTITY_KEY_MIN,
            "maximum": ENTITY_KEY_MAX,
            "description": "Entity key for the online features.",
        }
    return {
        "type": "object",
        "required": sorted(properties),
        "properties": properties,
        "additionalProperties": False,
    }


def openapi_document(cascades: Sequence[LoadedCascade]) -> dict[str, Any]:
    schemas: dict[str, Any] = {"Error": ERROR, "Prediction": PREDICTION}
    paths: dict[str, Any] = {}
    for cascade in cascades:
        row = f"{cascade.name}_row"
        schemas[row] = row_schema(cascade)
        batch = {
            "type": "object",
            "required": ["rows"],
            "additionalProperties": False,
            "properties": {
                "rows": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": DEFAULT_MAX_ROWS,
                    "items": {"$ref": f"#/components/schemas/{row}"},
                },
            },
        }
        body = {"oneOf": [batch, {"$ref": f"#/components/schemas/{row}"}]}  # a batch, or one row as is
        paths[f"/v1/cascades/{cascade.name}/predict"] = {"post": _predict_operation(cascade.name, body)}
    paths["/v1/cascades"] = {
        "get": {"summary": "Served cascades", "responses": {"200": _json({"type": "object"})}}
    }
    paths["/healthz"] = {"get": {"summary": "Alive", "responses": {"200": _json({"type": "object"})}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "skewguard gateway", "version": "1"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def _predict_operation(name: str, body: dict[str, Any]) -> dict[str, Any]:
    error = _json({"$ref": "#/components/schemas/Error"})
    result = {
        "type": "object",
        "required": ["cascade", "request_id", "predictions"],
        "properties": {
            "cascade": {"type": "string"},
            "request_id": {
                "type": "string",
                "description": "The id the prediction log keeps the answer under.",
            },
            "predictions": {"type": "array", "items": {"$ref": "#/components/schemas/Prediction"}},
        },
    }
    return {
        "summary": f"Predict with the {name} cascade",
        "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
        "responses": {
            "200": _json(result),
            **{status: error for status in ("400", "401", "404", "413", "422", "503", "504")},
        },
    }


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": "JSON", "content": {"application/json": {"schema": schema}}}
