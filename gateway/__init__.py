"""ASGI gateway: POST /v1/cascades/{name}/predict and friends."""
