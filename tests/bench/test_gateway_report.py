"""The gateway benchmark's report: the warning beside the targets when httpx generated the load."""

from __future__ import annotations

from bench.gateway_load import describe_tool
from bench.gateway_report import loadgen_caveat


def test_the_targets_carry_a_caution_when_the_httpx_fallback_drove_a_cell() -> None:
    fallback = describe_tool("httpx")
    wrk = "wrk debian/4.1.0-3+b2 (Debian package), 2 threads, keep-alive, Lua status counts"

    assert loadgen_caveat([wrk]) == []
    assert loadgen_caveat([]) == []
    for tools in ([fallback], [wrk, fallback]):
        caution = loadgen_caveat(tools)
        assert caution[0].startswith("  CAUTION: async httpx drove some cells")
        assert "Use wrk (Debian package)" in " ".join(caution)
