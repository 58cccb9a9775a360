"""With BERTH_E2E_REPLICAS: the suite's requests really were spread over the replicas.

Runs after the client tests of the session (pytest orders modules by name, and the
`registry` fixture's replicas live for the whole session): every replica must have
served a fair share of them, else the suite proved nothing about replicas.
"""

from __future__ import annotations

import pytest

from conftest import _REPLICAS, replica_count


def test_requests_were_spread_over_every_replica(registry):
    if not replica_count():
        pytest.skip("one registry: BERTH_E2E_REPLICAS is not set")
    served = _REPLICAS["open"].requests_served()
    total = sum(served)
    assert total > 0
    # Round robin hands out requests in turn: each replica gets close to 1/N of them
    # (requests that bypass nginx, such as the /metrics reads above, are few).
    for i, n in enumerate(served):
        assert n >= total / len(served) / 2, f"replica {i} served {n} of {total}: {served}"
