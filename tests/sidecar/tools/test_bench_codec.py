"""The codec micro-benchmark runs and reports its figures (no timing is asserted)."""

import pytest

from sidecar.tools import bench_codec


def test_run_reports_microseconds_per_operation():
    result = bench_codec.run(iterations=5)
    assert result["iterations"] == 5
    for key in (
        "encode_request_us",
        "decode_response_us",
        "fastjson_encode_request_us",
        "fastjson_decode_response_us",
    ):
        assert isinstance(result[key], float) and result[key] > 0


def test_run_rejects_zero_iterations():
    with pytest.raises(ValueError):
        bench_codec.run(iterations=0)
