"""The exceptions mqdb raises. Every one derives from :class:`Error`."""


class Error(Exception):
    """Base class of every mqdb error."""


class ClosedError(Error):
    """The store was used after ``close()``."""

    def __init__(self, message: str = "the store is closed; open it again with mqdb.open(path)"):
        super().__init__(message)


class LockedError(Error):
    """Another process holds the store open for writing."""


class ReadOnlyError(Error):
    """A write was attempted on a store opened with ``readonly=True``."""


class StoreNotFoundError(Error):
    """A read-only open named a directory that holds no store."""


class FormatError(Error):
    """A file is not an mqdb file, or was written by an incompatible version."""


class CorruptionError(Error):
    """Stored bytes failed their checksum or do not parse.

    ``path`` and ``offset`` name the damaged place; ``queue`` is set when it is known.
    """

    def __init__(self, path: str, offset: int, reason: str, queue: str | None = None):
        self.path = path
        self.offset = offset
        self.reason = reason
        self.queue = queue
        where = f"{path} at offset {offset}"
        if queue is not None:
            where += f" (queue {queue!r})"
        super().__init__(f"corrupt data in {where}: {reason}")


class FrameError(CorruptionError):
    """The frames of a block (or of a staging chunk) do not parse: a length runs past its buffer, or
    a frame starts past the end. ``offset`` is where in the buffer the bad frame starts; the reader
    that knows the file turns it into a :class:`CorruptionError` naming the file, the block and the queue."""

    def __init__(self, offset: int, reason: str):
        self.path = ""
        self.offset = offset
        self.reason = reason
        self.queue = None
        Error.__init__(self, f"frames do not parse at byte {offset} of their buffer: {reason}")

    def __reduce__(self):
        return type(self), (self.offset, self.reason)
