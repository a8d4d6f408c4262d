"""The demo Dubbo service's logic, without I/O: ``IHelloService`` as a Java Dubbo provider exports it.

* :func:`java_string_hash` is Java's ``String.hashCode`` (:mod:`sidecar.codecs.javahash`, compiled
  with the sidecar's codecs).
* :class:`HelloService` turns a decoded call into the reply a Java provider (Dubbo 2.6 / 2.7) would
  send: the value, an exception result, or an error status with Dubbo's message.

The I/O layer (:mod:`integrations.demo.demo_provider`) reads frames, applies latency and capacity, and
writes what this module returns.

Methods of ``com.alibaba.dubbo.performance.demo.provider.IHelloService``:

=======================  =====================================================================
``int hash(String)``     ``String.hashCode`` of the argument
``String echo(String)``  the argument itself
``Object $echo(Object)`` Dubbo's built-in echo (``EchoService``), on any exported service
=======================  =====================================================================

What a call gets, as in Java Dubbo:

* a known method with one argument of the wrong type: an exception result
  (``java.lang.ClassCastException``); ``hash(null)``: ``java.lang.NullPointerException``;
* a method the service does not have (or the wrong number of arguments): status 70
  ``SERVICE_ERROR`` whose message is the ``RpcException`` that wraps ``NoSuchMethodException``;
* a service path (or, when a version is configured, a version) that is not exported: status 70 with
  the ``RemotingException`` "Not found exported service";
* no free capacity: status 100 ``SERVER_THREADPOOL_EXHAUSTED_ERROR`` (:meth:`HelloService.refuse`);
* a body that cannot be decoded: status 40 ``BAD_REQUEST`` (:meth:`HelloService.reject`).

Replies use the serialization of the request (Hessian 2 or fastjson); callers that speak Dubbo
protocol 2.0.2 or later get result flags with attachments (``{"dubbo": "2.0.2"}``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sidecar.codecs.dubbo_messages import (
    DUBBO_VERSION,
    Event,
    Frame,
    Request,
    Response,
    Serialization,
    Status,
    heartbeat,
    supports_response_attachments,
)
from sidecar.codecs.javahash import java_string_hash
from sidecar.codecs.javatypes import Date, JavaObject, Long, TypedList, TypedMap, java_exception

__all__ = ["SERVICE", "IMPLEMENTATION", "java_string_hash", "HelloService"]

SERVICE = "com.alibaba.dubbo.performance.demo.provider.IHelloService"
IMPLEMENTATION = "com.alibaba.dubbo.performance.demo.provider.HelloServiceImpl"

_SERIALIZATIONS = frozenset(kind.value for kind in Serialization)


def _java_class(value: Any) -> str:
    """The Java class a decoded argument arrived as (for ``ClassCastException`` messages)."""
    if isinstance(value, JavaObject):
        return value.class_name
    if isinstance(value, (TypedList, TypedMap)):
        return value.type
    for kind, name in _JAVA_CLASSES:
        if isinstance(value, kind):
            return name
    return "java.lang.Object"


_JAVA_CLASSES = (
    (bool, "java.lang.Boolean"),
    (Date, "java.util.Date"),
    (Long, "java.lang.Long"),
    (int, "java.lang.Integer"),
    (float, "java.lang.Double"),
    (str, "java.lang.String"),
    ((bytes, bytearray), "[B"),
    ((list, tuple), "java.util.ArrayList"),
    (dict, "java.util.HashMap"),
)


def _bare_version(version: Any) -> str | None:
    """Dubbo's service key leaves out an empty version and ``0.0.0``."""
    if not isinstance(version, str) or version in ("", "0.0.0"):
        return None
    return version


class _Thrown(Exception):
    """A Java exception thrown by the method itself (becomes an exception result)."""

    def __init__(self, class_name: str, message: str | None):
        super().__init__(message)
        self.class_name = class_name
        self.message = message


class _Failed(Exception):
    """A failure around the method (becomes status 70 with Dubbo's message)."""


@dataclass(frozen=True, slots=True)
class HelloService:
    """``IHelloService`` exported at ``host:port``.

    Attributes:
        version: the service version this provider exports; ``None`` (the default) answers whatever
            version a call names.
        host, port: the provider's address, as it appears in Dubbo's messages.
        serialization: the provider's configured serialization, used where no request tells which one
            to answer in (heartbeats it starts, replies to frames in an unknown serialization).
    """

    version: str | None = None
    host: str = "127.0.0.1"
    port: int = 20880
    serialization: int = Serialization.HESSIAN2

    @property
    def url(self) -> str:
        return f"dubbo://{self.host}:{self.port}/{SERVICE}"

    def service_key(self, path: str | None, version: str | None) -> str:
        """Dubbo's key for an exported service: ``path[:version]:port``."""
        version = _bare_version(version)
        return f"{path}{':' + version if version else ''}:{self.port}"

    # -- calls -----------------------------------------------------------------------------------
    def answer(self, request: Request) -> Response:
        """The reply to a call that has been given capacity to run."""
        response = Response(request.request_id, serialization=request.serialization)
        if supports_response_attachments(request.dubbo_version):
            response.attachments = {"dubbo": DUBBO_VERSION}
        try:
            self._find_service(request)
            response.value = self._invoke(request.method, list(request.arguments))
        except _Thrown as thrown:
            response.exception = self._exception(request.serialization, thrown.class_name, thrown.message)
        except _Failed as failed:
            response = Response(
                request.request_id,
                Status.SERVICE_ERROR,
                error_message=str(failed),
                serialization=request.serialization,
            )
        return response

    def _find_service(self, request: Request) -> None:
        # The body's path and version are overridden by the attachments of the same names, as in
        # Dubbo's DecodeableRpcInvocation.
        attachments = request.attachments if isinstance(request.attachments, dict) else {}
        path = attachments.get("path")
        path = path if isinstance(path, str) else request.service_path
        version = attachments.get("version", request.service_version)
        if path == SERVICE and (self.version is None or _bare_version(version) == _bare_version(self.version)):
            return
        exported = self.service_key(SERVICE, self.version)
        raise _Failed(
            "com.alibaba.dubbo.remoting.RemotingException: Not found exported service: "
            f"{self.service_key(path, version)} in [{exported}], may be version or group mismatch, "
            f"method: {request.method}"
        )

    def _invoke(self, method: str, arguments: list[Any]) -> Any:
        if len(arguments) == 1:
            argument = arguments[0]
            if method == "$echo":
                return argument
            if method in ("hash", "echo"):
                if argument is not None and not isinstance(argument, str):
                    raise _Thrown(
                        "java.lang.ClassCastException", f"{_java_class(argument)} cannot be cast to java.lang.String"
                    )
                if method == "echo":
                    return argument
                if argument is None:
                    raise _Thrown("java.lang.NullPointerException", None)
                return java_string_hash(argument)
        raise _Failed(
            f"com.alibaba.dubbo.rpc.RpcException: Failed to invoke remote proxy method {method} to {self.url}, "
            f'cause: Not found method "{method}" in class {IMPLEMENTATION}.'
        )

    @staticmethod
    def _exception(serialization: int, class_name: str, message: str | None) -> Any:
        """A Throwable as each serialization carries it: a Hessian object, or fastjson's map."""
        if serialization == Serialization.FASTJSON:
            return {"@type": class_name, "message": message, "localizedMessage": message, "stackTrace": []}
        return java_exception(class_name, message)

    def refuse(self, request: Request, in_progress: int, capacity: int) -> Response:
        """Status 100: every slot is taken (Dubbo's message when its thread pool rejects a call)."""
        message = (
            f"Server side({self.host},{self.port}) threadpool is exhausted ,detail msg:Thread pool is EXHAUSTED! "
            f"Pool Size: {capacity} (active: {in_progress}, core: {capacity}, max: {capacity}), in {self.url}!"
        )
        return Response(
            request.request_id,
            Status.SERVER_THREADPOOL_EXHAUSTED_ERROR,
            error_message=message,
            serialization=request.serialization,
        )

    def reject(self, frame: Frame, reason: str) -> Response:
        """Status 40 for a request frame whose body could not be decoded."""
        known = frame.serialization in _SERIALIZATIONS
        return Response(
            frame.request_id,
            Status.BAD_REQUEST,
            error_message=f"Fail to decode request due to: {reason}",
            serialization=frame.serialization if known else self.serialization,
        )

    # -- events ----------------------------------------------------------------------------------
    def on_event(self, event: Event) -> Event | None:
        """The reply to an event frame: a heartbeat request that waits for one gets it; other events
        (replies to our heartbeats, read-only notices) get nothing."""
        if event.is_request and event.two_way and event.is_heartbeat:
            return heartbeat(event.request_id, reply=True, serialization=event.serialization)
        return None

    def heartbeat(self, request_id: int) -> Event:
        """A heartbeat request from this provider, in its configured serialization."""
        return heartbeat(request_id, serialization=self.serialization)
