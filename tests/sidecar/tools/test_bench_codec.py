"""The codec micro-benchmark runs and reports its figures (no timing is asserted)."""

import json

import pytest

from sidecar import _accel
from sidecar.tools import bench_codec


def test_run_reports_microseconds_per_operation():
    result = bench_codec.run(iterations=5, calls=8)
    assert result["iterations"] == 5
    for key in (
        "encode_request_us",
        "decode_response_us",
        "fastjson_encode_request_us",
        "fastjson_decode_response_us",
    ):
        assert isinstance(result[key], float) and result[key] > 0
    assert result["build"] == _accel.describe()


def test_paths_time_both_builds_and_their_ratio():
    figures = bench_codec.paths(calls=8, rounds=1)
    assert set(figures["pure"]) == set(bench_codec.PATHS)
    if "compiled" not in figures:
        pytest.skip("the compiled twins are not built")
    for hop in bench_codec.PATHS:
        assert figures["ratio"][hop] == pytest.approx(figures["compiled"][hop] / figures["pure"][hop], rel=0.01)


def test_the_calls_are_the_benchmark_calls():
    requests = bench_codec.http_requests(32)
    assert bench_codec.java_hash("hello") == 99162322
    assert bench_codec.java_hash("\U0001f600") == 1772899
    assert any(b"%F0%9F" in raw for raw, _, _ in requests) and any(b"%" not in raw[-20:] for raw, _, _ in requests)
    assert all(bench_codec.java_hash(parameter) == value for _, parameter, value in requests)


def test_parsing_times_ours_in_both_builds_and_llhttp():
    figures = bench_codec.parsing(calls=8, rounds=1)
    expected = {"pure", "llhttp", "httptools_bare"} | ({"compiled"} if "compiled" in bench_codec.paths(1, 1) else set())
    assert set(figures) == expected
    assert all(value > 0 for value in figures.values())
    with pytest.raises(ValueError):
        bench_codec.parsing(calls=0)


def test_main_prints_the_paths(capsys):
    bench_codec.main(["3", "4"])
    out = capsys.readouterr().out
    for hop in bench_codec.PATHS:
        assert hop in out


def test_run_rejects_zero_iterations():
    with pytest.raises(ValueError):
        bench_codec.run(iterations=0)
    with pytest.raises(ValueError):
        bench_codec.paths(calls=0)


def test_sidecar_bench_begins_with_the_build_and_the_codec_ratios():
    from sidecar.tools import bench

    lines = list(bench.codec_lines(calls=8))
    assert lines[0] == f"core: {bench_codec.build()}"
    assert any(line.startswith("codec CPU µs per call, pure build: request ") for line in lines)
    parse = next(line for line in lines if line.startswith("HTTP request parse µs: "))
    assert " pure " in parse and " llhttp " in parse and "(llhttp / ours " in parse
    record = json.loads(next(bench.codec_lines(as_json=True, calls=8)))
    assert record["target"] == "codecs" and set(record["cpu_us_per_call"]["pure"]) == set(bench_codec.PATHS)
    assert "llhttp" in record["parse_us"]
