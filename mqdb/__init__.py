"""mqdb: an embeddable store for a million append-only queues.

>>> import mqdb, tempfile
>>> with mqdb.open(tempfile.mkdtemp()) as db:
...     db.put("Queue-42", b"hello"), db.put("Queue-42", b"world")
...     db.get("Queue-42", 0, 10)
(0, 1)
[b'hello', b'world']
"""

from importlib.metadata import PackageNotFoundError, version

from .cluster.errors import (
    ClusterError,
    ClusterUnreachableError,
    ConflictError,
    ForeignStreamError,
    MissingDependencyError,
    NotDurableError,
)
from .db import DB
from .errors import (
    ClosedError,
    CorruptionError,
    Error,
    FormatError,
    LockedError,
    ReadOnlyError,
    StoreNotFoundError,
)
from .options import DEFAULT_OPTIONS
from .store import Store, open

try:
    __version__ = version("dubbomesh")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = [
    "DB",
    "DEFAULT_OPTIONS",
    "ClosedError",
    "ClusterError",
    "ClusterUnreachableError",
    "ConflictError",
    "CorruptionError",
    "Error",
    "FormatError",
    "ForeignStreamError",
    "LockedError",
    "MissingDependencyError",
    "NotDurableError",
    "ReadOnlyError",
    "Store",
    "StoreNotFoundError",
    "open",
]
