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
    """The two roles' states and the keep-alive flag, moved only through the tables above.

    ``client``, ``server`` and ``keep_alive`` are read as attributes (``states`` gives the two states
    as a dict keyed by role). Every combination of them is a :class:`_Situation` worked out from the
    tables once, when this module is imported, with where each move leads: a move is then one
    dictionary lookup, whatever the tables say about it."""

    __slots__ = ("client", "server", "keep_alive", "_at")

    def __init__(self) -> None:
        self._enter(_START)

    def __repr__(self) -> str:
        return f"<ConnectionState client={self.client} server={self.server} keep_alive={self.keep_alive}>"

    @property
    def states(self) -> dict[Sentinel, Sentinel]:
        """The state of each role, as a new dict."""
        return {CLIENT: self.client, SERVER: self.server}

    def _enter(self, at: _Situation) -> None:
        self._at = at
        self.client, self.server, self.keep_alive = at.client, at.server, at.keep_alive

    def next_state(self, role: Sentinel, event_type: type) -> Sentinel:
        """The state ``role`` reaches by sending an ``event_type``; raises when the tables forbid it."""
        if role is CLIENT:
            state = self.client
        elif role is SERVER:
            state = self.server
        else:
            raise ValueError(f"no such role: {role!r}")
        try:
            return TRANSITIONS[role][state][event_type]
        except KeyError:
            raise LocalProtocolError(f"{role} cannot send {event_type.__name__} in state {state}") from None

    def process_event(self, role: Sentinel, event_type: type) -> None:
        """``role`` sent an ``event_type``: both roles move as the tables say (a miss raises, as
        :meth:`next_state` does, and changes nothing). A :class:`ConnectionClosed` ends keep-alive."""
        if role is CLIENT:
            at = self._at.client_moves.get(event_type)
        elif role is SERVER:
            at = self._at.server_moves.get(event_type)
        else:
            raise ValueError(f"no such role: {role!r}")
        if at is None:
            self.next_state(role, event_type)  # raises: the tables have no such move
        self._enter(at)

    def process_error(self, role: Sentinel) -> None:
        """``role`` broke the protocol: it goes to ``ERROR`` from any state, and keep-alive is off."""
        if role is CLIENT:
            self._enter(self._at.client_error)
        elif role is SERVER:
            self._enter(self._at.server_error)
        else:
            raise ValueError(f"no such role: {role!r}")

    def disable_keep_alive(self) -> None:
        self._enter(self._at.closing)

    def start_next_cycle(self) -> None:
        if self.client is not DONE or self.server is not DONE or not self.keep_alive:
            raise LocalProtocolError(
                f"start_next_cycle() needs both roles DONE with keep-alive; client is {self.client}, "
                f"server is {self.server}, keep_alive={self.keep_alive}"
            )
        self._enter(_START)


class _Situation:
    """Both roles' states and the keep-alive flag, settled, and where each change leads from here:
    ``client_moves`` and ``server_moves`` by the event class a role sends, ``client_error`` and
    ``server_error`` when that role breaks the protocol, ``closing`` when keep-alive ends."""

    __slots__ = (
        "client", "server", "keep_alive", "client_moves", "server_moves", "client_error", "server_error", "closing",
    )  # fmt: skip

    def __init__(self, client: Sentinel, server: Sentinel, keep_alive: bool):
        self.client, self.server, self.keep_alive = client, server, keep_alive
        self.client_moves: dict[type, _Situation] = {}
        self.server_moves: dict[type, _Situation] = {}
        self.client_error = self.server_error = self.closing = self

    def __repr__(self) -> str:
        return f"<_Situation client={self.client} server={self.server} keep_alive={self.keep_alive}>"


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


def _situations() -> _Situation:
    """Every combination of a client state, a server state and keep-alive, each linked to where the
    tables take it; returns the start of a cycle (both ``IDLE``, keep-alive on)."""
    every = {
        (client, server, keep_alive): _Situation(client, server, keep_alive)
        for client in TRANSITIONS[CLIENT]
        for server in TRANSITIONS[SERVER]
        for keep_alive in (True, False)
    }

    def settled(client: Sentinel, server: Sentinel, keep_alive: bool) -> _Situation:
        return every[(*_settle(client, server, keep_alive), keep_alive)]

    for (client, server, keep_alive), at in every.items():
        for event_type, state in TRANSITIONS[CLIENT][client].items():
            at.client_moves[event_type] = settled(state, server, keep_alive and event_type is not ConnectionClosed)
        for event_type, state in TRANSITIONS[SERVER][server].items():
            at.server_moves[event_type] = settled(client, state, keep_alive and event_type is not ConnectionClosed)
        at.client_error = settled(ERROR, server, False)
        at.server_error = settled(client, ERROR, False)
        at.closing = settled(client, server, False)
    return every[IDLE, IDLE, True]


_START = _situations()


import_c_accel(globals(), "sidecar.codecs._c_http1_states")
