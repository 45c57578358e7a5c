"""One local Dask cluster for every test of ``sparseopt.dask``: two worker processes of one
thread each, started once per session (a cluster takes seconds to start)."""
from __future__ import annotations

import pytest

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="session")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=None)
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


@pytest.fixture
def two_workers(client):
    """The client, with both workers up (a test may have killed one; the nanny restarts
    it)."""
    client.wait_for_workers(2, timeout=60)
    return client
