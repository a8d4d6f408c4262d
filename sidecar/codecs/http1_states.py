"""HTTP/1.1 events and the connection state machine of :mod:`sidecar.codecs.http1` (h11's layout).

Every rule about what may happen when lives in this file, as tables:

* :data:`TRANSITIONS` ``{role: {state: {event class: next state}}}``: what each role may send in each
  state. A miss raises :class:`LocalProtocolError` naming the role, the state and the event.
* :data:`STATE_TRIGGERED` ``{(client state, server state): {role: next state}}``: what one side's
  move does to the other (a request makes the server owe a response; a broken request still gets
  its error response; a peer that hung up between requests leaves nothing but closing).
* keep-alive: once the connection cannot be reused, a role that reaches ``DONE`` goes on to
  ``MUST_CLOSE``; with keep-alive, ``start_next_cycle()`` takes both roles from ``DONE`` back to ``IDLE``.

A request/response exchange is one *cycle*: the client sends :class:`Request`, :class:`Data`...,
:class:`EndOfMessage`; the server answers with one :class:`Response` (body included), optionally after
:class:`InformationalResponse` s such as ``100 Continue``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sidecar._accel import import_c_accel
from sidecar.errors import LocalProtocolError

__all__ = [
    "Sentinel",
    "CLIENT",
    "SERVER",
    "IDLE",
    "SEND_BODY",
    "SEND_RESPONSE",
    "DONE",
    "MUST_CLOSE",
    "CLOSED",
    "ERROR",
    "NEED_DATA",
    "PAUSED",
    "Headers",
    "Request",
    "Data",
    "EndOfMessage",
    "ConnectionClosed",
    "InformationalResponse",
    "Response",
    "TRANSITIONS",
    "STATE_TRIGGERED",
    "ConnectionState",
]


class Sentinel:
    """A named constant compared with ``is`` (roles, states, and the non-event results)."""

    __slots__ = ("_name",)

    def __init__(self, name: str):
        self._name = name

    def __repr__(self) -> str:
        return self._name


CLIENT = Sentinel("CLIENT")
SERVER = Sentinel("SERVER")

IDLE = Sentinel("IDLE")  # between cycles
SEND_BODY = Sentinel("SEND_BODY")  # client: request head sent, body (maybe empty) under way
SEND_RESPONSE = Sentinel("SEND_RESPONSE")  # server: owes the response of the current cycle
DONE = Sentinel("DONE")  # this role's part of the cycle is complete
MUST_CLOSE = Sentinel("MUST_CLOSE")  # done, and the connection cannot be reused
CLOSED = Sentinel("CLOSED")  # this role closed its side (EOF)
ERROR = Sentinel("ERROR")  # this role broke the protocol; the connection is beyond repair

NEED_DATA = Sentinel("NEED_DATA")  # next_event(): feed more bytes first
PAUSED = Sentinel("PAUSED")  # next_event(): finish the current cycle first (send, start_next_cycle)

Headers = list[tuple[str, str]]


@dataclass(slots=True)
class Request:
    """A request head. Parsed header names are lower case, values Latin-1 decoded and stripped.

    ``keep_alive`` says whether the client allows the connection to be reused after this cycle:
    HTTP/1.1 unless ``Connection: close``, HTTP/1.0 only with ``Connection: keep-alive``.
    """

    method: str
    target: str
    headers: Headers = field(default_factory=list)
    http_version: str = "1.1"
    keep_alive: bool = True


@dataclass(slots=True)
class Data:
    """A piece of a message body, as it arrived (one body may come as many pieces)."""

    data: bytes


@dataclass(slots=True)
class EndOfMessage:
    """The end of a message body (chunked trailers, if any, were read and ignored)."""


@dataclass(slots=True)
class ConnectionClosed:
    """The peer closed its side of the connection between messages."""


@dataclass(slots=True)
class InformationalResponse:
    """A 1xx response head, such as ``100 Continue``; the final :class:`Response` still follows."""

    status: int
    headers: Headers = field(default_factory=list)
    reason: str = ""


@dataclass(slots=True)
class Response:
    """A complete response: status, headers and the whole body.

    On sending, an empty ``reason`` means the standard phrase of the status; framing headers
    (``Content-Length``, ``Connection``) are written by the codec. On receiving, ``reason`` is the
    phrase the server sent and ``headers`` are as sent, names in lower case.
    """

    status: int
    headers: Headers = field(default_factory=list)
    body: bytes = b""
    reason: str = ""


# -- the rules -------------------------------------------------------------------------------------

TRANSITIONS: dict[Sentinel, dict[Sentinel, dict[type, Sentinel]]] = {
    CLIENT: {
        IDLE: {Request: SEND_BODY, ConnectionClosed: CLOSED},
        SEND_BODY: {Data: SEND_BODY, EndOfMessage: DONE},
        DONE: {ConnectionClosed: CLOSED},
        MUST_CLOSE: {ConnectionClosed: CLOSED},
        CLOSED: {ConnectionClosed: CLOSED},
        ERROR: {},
    },
    SERVER: {
        IDLE: {ConnectionClosed: CLOSED},
        SEND_RESPONSE: {InformationalResponse: SEND_RESPONSE, Response: DONE},
        DONE: {ConnectionClosed: CLOSED},
        MUST_CLOSE: {ConnectionClosed: CLOSED},
        CLOSED: {ConnectionClosed: CLOSED},
        ERROR: {},
    },
}

STATE_TRIGGERED: dict[tuple[Sentinel, Sentinel], dict[Sentinel, Sentinel]] = {
    (SEND_BODY, IDLE): {SERVER: SEND_RESPONSE},  # a request arrived: the server owes its response
    (ERROR, IDLE): {SERVER: SEND_RESPONSE},  # a broken request still gets its error response
    (CLOSED, IDLE): {SERVER: MUST_CLOSE},  # the client hung up between requests
    (IDLE, CLOSED): {CLIENT: MUST_CLOSE},  # the server hung up between requests
    (IDLE, ERROR): {CLIENT: MUST_CLOSE},  # the server's bytes are garbage: no further request
}


class ConnectionState:
    """The two roles' states and the keep-alive flag, moved only through the tables above."""

    __slots__ = ("states", "keep_alive")

    def __init__(self) -> None:
        self.states = {CLIENT: IDLE, SERVER: IDLE}
        self.keep_alive = True

    def __repr__(self) -> str:
        return (
            f"<ConnectionState client={self.states[CLIENT]} server={self.states[SERVER]} keep_alive={self.keep_alive}>"
        )

    def next_state(self, role: Sentinel, event_type: type) -> Sentinel:
        """The state ``role`` reaches by sending an ``event_type``; raises when the tables forbid it."""
        state = self.states[role]
        try:
            return TRANSITIONS[role][state][event_type]
        except KeyError:
            raise LocalProtocolError(f"{role} cannot send {event_type.__name__} in state {state}") from None

    def process_event(self, role: Sentinel, event_type: type) -> None:
        self.states[role] = self.next_state(role, event_type)
        if event_type is ConnectionClosed:
            self.keep_alive = False  # a side that hung up ends the connection after this cycle
        self._fire_state_triggered()

    def process_error(self, role: Sentinel) -> None:
        """``role`` broke the protocol: it goes to ``ERROR`` from any state, and keep-alive is off."""
        self.states[role] = ERROR
        self.keep_alive = False
        self._fire_state_triggered()

    def disable_keep_alive(self) -> None:
        self.keep_alive = False
        self._fire_state_triggered()

    def start_next_cycle(self) -> None:
        if self.states[CLIENT] is not DONE or self.states[SERVER] is not DONE or not self.keep_alive:
            raise LocalProtocolError(
                f"start_next_cycle() needs both roles DONE with keep-alive; client is {self.states[CLIENT]}, "
                f"server is {self.states[SERVER]}, keep_alive={self.keep_alive}"
            )
        self.states[CLIENT] = self.states[SERVER] = IDLE

    def _fire_state_triggered(self) -> None:
        states = self.states
        key = (states[CLIENT], states[SERVER], self.keep_alive)
        settled = _SETTLED.get(key)
        if settled is None:
            settled = _SETTLED[key] = _settle(*key)
        states[CLIENT], states[SERVER] = settled


def _settle(client: Sentinel, server: Sentinel, keep_alive: bool) -> tuple[Sentinel, Sentinel]:
    """Where the two states come to rest: the keep-alive rule and :data:`STATE_TRIGGERED` applied
    until nothing changes."""
    states = {CLIENT: client, SERVER: server}
    while True:
        before = dict(states)
        if not keep_alive:
            for role in (CLIENT, SERVER):
                if states[role] is DONE:
                    states[role] = MUST_CLOSE
        states.update(STATE_TRIGGERED.get((states[CLIENT], states[SERVER]), {}))
        if states == before:
            return states[CLIENT], states[SERVER]


# _settle() of each (client state, server state, keep_alive) met so far: at most 7 * 7 * 2 entries.
_SETTLED: dict[tuple[Sentinel, Sentinel, bool], tuple[Sentinel, Sentinel]] = {}


import_c_accel(globals(), "sidecar.codecs._c_http1_states")
