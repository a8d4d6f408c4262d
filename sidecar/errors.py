"""Protocol errors shared by every codec in :mod:`sidecar`.

There is one base class, :class:`ProtocolError`, and two concrete kinds:

* :class:`LocalProtocolError`: *we* were asked to do something the protocol does not allow
  (encode a value Hessian cannot carry, exceed the payload limit, use a decoder after it failed).
* :class:`RemoteProtocolError`: the *peer* sent bytes that break the protocol (garbage, truncation,
  a frame larger than the limit).

Each error carries ``status_hint``, the HTTP status that fits best when the error has to become an
HTTP reply, so the I/O layer can answer without ``isinstance`` ladders, and ``request_id`` when the
error concerns one Dubbo frame whose header was readable (the caller can then answer that one call
instead of dropping the whole connection).

One more kind belongs to the I/O layer rather than to a codec: :class:`UpstreamUnavailable`, raised
when a frame cannot be sent to a Dubbo service because no connection to it is up; the caller answers
that call at once with an error reply instead of letting it wait for its deadline.
"""

from __future__ import annotations

__all__ = ["ProtocolError", "LocalProtocolError", "RemoteProtocolError", "UpstreamUnavailable"]


class ProtocolError(Exception):
    """Base class of every protocol error; never raised itself.

    Attributes:
        reason: the message, saying what was wrong and where.
        status_hint: the HTTP status that suits this error (400 unless the raiser knows better).
        request_id: the Dubbo request id the error belongs to, or ``None``.
    """

    status_hint: int = 400

    def __init__(self, reason: str, *, status_hint: int | None = None, request_id: int | None = None):
        if type(self) is ProtocolError:
            raise TypeError("raise LocalProtocolError or RemoteProtocolError, not ProtocolError itself")
        super().__init__(reason)
        self.reason = reason
        if status_hint is not None:
            self.status_hint = status_hint
        self.request_id = request_id

    def __repr__(self) -> str:
        extra = "" if self.request_id is None else f", request_id={self.request_id}"
        return f"{type(self).__name__}({self.reason!r}, status_hint={self.status_hint}{extra})"


class LocalProtocolError(ProtocolError):
    """We tried to break the protocol: the value or call cannot be encoded as asked."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol: the bytes received cannot be decoded."""


class UpstreamUnavailable(ProtocolError):
    """A frame cannot go to the Dubbo service: no connection to it is up (it is down, refuses
    connections, or every connection just failed). Status hint 503; ``reason`` names the service and
    the last connection error."""

    status_hint = 503
