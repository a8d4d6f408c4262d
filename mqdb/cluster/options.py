"""Options of ``mqdb.open("redis://...")``, their defaults and their checks."""

from types import MappingProxyType

#: Every option of ``mqdb.open("redis://...")`` with its default.
#:
#: ``readonly``          open to read only (the admin CLI); puts raise ReadOnlyError.
#: ``replicas``          replicas that must acknowledge a flush (``WAIT``), at most as many as each
#:                       primary has: with 1, a flushed message survives the loss of one primary.
#: ``wait_timeout``      seconds a flush waits for the replicas; short of them it raises NotDurableError.
#: ``failover_timeout``  seconds a flush, read or put keeps retrying while the slots of a lost or
#:                       migrating primary are not served (a replica takes over after the cluster's
#:                       ``cluster-node-timeout``); then NotDurableError or ClusterUnreachableError.
#: ``pipeline_bytes``    a primary's pending puts are sent once they pass this many bytes.
#: ``journal_bytes``     a primary's sent puts are confirmed with ``WAIT`` once they pass this many
#:                       bytes, even before a flush, so the handle's memory stays bounded.
#: ``connect_timeout``   seconds to connect to one node.
DEFAULT_CLUSTER_OPTIONS = MappingProxyType(
    {
        "readonly": False,
        "replicas": 1,
        "wait_timeout": 5.0,
        "failover_timeout": 30.0,
        "pipeline_bytes": 1 << 20,
        "journal_bytes": 64 << 20,
        "connect_timeout": 2.0,
    }
)


def resolve(options: dict) -> dict:
    unknown = sorted(set(options) - set(DEFAULT_CLUSTER_OPTIONS))
    if unknown:
        raise TypeError(
            f"unknown option(s) for a Redis Cluster store: {', '.join(unknown)}; known: "
            f"{', '.join(DEFAULT_CLUSTER_OPTIONS)}"
        )
    opts = dict(DEFAULT_CLUSTER_OPTIONS, **options)
    if not isinstance(opts["readonly"], bool):
        raise TypeError(f"option readonly must be True or False, not {opts['readonly']!r}")
    for name in ("replicas", "pipeline_bytes", "journal_bytes"):
        if not isinstance(opts[name], int) or isinstance(opts[name], bool) or opts[name] < 0:
            raise ValueError(f"option {name} must be an int >= 0, not {opts[name]!r}")
    for name in ("wait_timeout", "failover_timeout", "connect_timeout"):
        if not isinstance(opts[name], int | float) or isinstance(opts[name], bool) or opts[name] <= 0:
            raise ValueError(f"option {name} must be a number of seconds > 0, not {opts[name]!r}")
    return opts
