import pytest

import mqdb


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "store"
    db = mqdb.open(path)
    yield db
    db.close()


@pytest.fixture
def small_store(tmp_path):
    """A store with a tiny pool, a small stage and small blocks, so distribution, eviction, continuation
    and batching happen early."""
    path = tmp_path / "small"
    db = mqdb.open(
        path, block_size=512, write_buffer_bytes=64 << 10, slice_size=32, write_batch_bytes=4096,
        shards=4, spill_bytes=4 * (32 << 10),
    )  # fmt: skip
    yield db
    db.close()


from tests.support.redis_cluster import cluster, cluster_url, fresh_cluster  # noqa: E402, F401 - fixtures
