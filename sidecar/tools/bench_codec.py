"""Micro-benchmark of the Dubbo codec on the benchmark's call: ``IHelloService.hash(String)``.

``run()`` measures, per operation and in microseconds, encoding a ``hash`` request frame and
decoding the frame of its response through :class:`~sidecar.codecs.dubbo.DubboDecoder`, in Hessian 2 and
in fastjson. Figures depend on the machine; they are for comparing changes to the codecs.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from sidecar.codecs.dubbo import NEED_DATA, DubboDecoder, Request, Response, Serialization, encode

__all__ = ["run", "SERVICE"]

SERVICE = "com.alibaba.dubbo.performance.demo.provider.IHelloService"


def _request(serialization: int, request_id: int = 1) -> Request:
    return Request(
        request_id,
        SERVICE,
        "hash",
        "Ljava/lang/String;",
        ["hello"],
        {"path": SERVICE, "version": "0.0.0"},
        serialization=serialization,
    )


def _microseconds(operation: Callable[[], object], iterations: int) -> float:
    operation()  # warm caches (descriptor parsing, first allocations)
    start = time.perf_counter()
    for _ in range(iterations):
        operation()
    return (time.perf_counter() - start) * 1e6 / iterations


def _measure(serialization: int, iterations: int) -> tuple[float, float]:
    request = _request(serialization)
    attachments = {"dubbo": "2.0.2"}
    response = encode(Response(1, value=99162322, attachments=attachments, serialization=serialization))

    def decode_response() -> object:
        decoder = DubboDecoder()
        decoder.receive_data(response)
        event = decoder.next_event()
        if event is NEED_DATA:
            raise RuntimeError("the response frame did not decode")
        return event

    return _microseconds(lambda: encode(request), iterations), _microseconds(decode_response, iterations)


def run(iterations: int = 20000) -> dict[str, float]:
    """Time ``iterations`` rounds of each operation; returns microseconds per operation."""
    if iterations < 1:
        raise ValueError("iterations must be at least 1")
    encode_h2, decode_h2 = _measure(Serialization.HESSIAN2, iterations)
    encode_json, decode_json = _measure(Serialization.FASTJSON, iterations)
    return {
        "iterations": iterations,
        "encode_request_us": encode_h2,
        "decode_response_us": decode_h2,
        "fastjson_encode_request_us": encode_json,
        "fastjson_decode_response_us": decode_json,
    }


def main(argv: list[str] | None = None) -> None:
    """`python -m sidecar.tools.bench_codec [ITERATIONS]`: print the figures, one per line."""
    args = sys.argv[1:] if argv is None else argv
    figures = run(int(args[0]) if args else 20000)
    for key, value in figures.items():
        print(f"{key:<30} {value:.2f}" if isinstance(value, float) else f"{key:<30} {value}")


if __name__ == "__main__":
    main()
