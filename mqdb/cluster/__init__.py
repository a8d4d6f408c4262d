"""mqdb over a Redis Cluster: ``mqdb.open("redis://HOST:PORT[,HOST:PORT...][/NAME]")`` returns a
:class:`~mqdb.cluster.store.ClusterStore` with the API of the embedded store, one stream per queue.
The key layout, the id mapping and what ``flush`` makes durable are written in `mqdb/CLUSTER.md`.

Needs the ``redis`` package (``pip install 'dubbomesh[redis]'``); this package imports it only when a
store is opened.
"""

from .errors import (
    ClusterError,
    ClusterUnreachableError,
    ConflictError,
    ForeignStreamError,
    MissingDependencyError,
    NotDurableError,
)
from .options import DEFAULT_CLUSTER_OPTIONS, resolve

__all__ = [
    "DEFAULT_CLUSTER_OPTIONS",
    "ClusterError",
    "ClusterUnreachableError",
    "ConflictError",
    "ForeignStreamError",
    "MissingDependencyError",
    "NotDurableError",
    "open_cluster",
]


def open_cluster(url: str, **options):
    """Open (or create) the store at ``url``; see :data:`DEFAULT_CLUSTER_OPTIONS`."""
    opts = resolve(options)
    try:
        from .store import ClusterStore
    except ImportError as e:
        if e.name and e.name.split(".")[0] == "redis":
            raise MissingDependencyError() from None
        raise
    return ClusterStore(url, opts)
