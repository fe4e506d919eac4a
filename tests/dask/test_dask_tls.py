"""The dask executor against a scheduler that speaks TLS only (``dask`` CLI processes)."""

from __future__ import annotations

import pytest
from dask_clusters import tls_cluster_fixture  # noqa: F401  (the `tls_cluster` fixture)

import nbflow as nf


def _flow() -> nf.Flow:
    flow = nf.Flow("tls")

    @flow.task
    def numbers():
        return [1, 2, 3]

    @flow.task(map="numbers")
    def square(numbers):
        return numbers * numbers

    @flow.task
    def total(square):
        return sum(square)

    return flow


def test_a_run_over_tls_with_a_security_object(tls_cluster):
    executor = nf.DaskExecutor(tls_cluster.address, security=tls_cluster.security)
    run = _flow().run(executor=executor)
    assert run.results["total"] == 14
    assert run.task("total").where.startswith("tls://127.0.0.1:")


@pytest.mark.timeout(60)  # fails at once: it does not even try without credentials
def test_without_credentials_the_run_fails_fast_and_says_so(tls_cluster):
    with pytest.raises(nf.ExecutorError) as info:
        _flow().run(executor=nf.DaskExecutor(tls_cluster.address, connect_timeout=3))
    assert tls_cluster.address in str(info.value)
    assert "speaks TLS: pass its credentials" in str(info.value)  # refused before connecting


@pytest.mark.timeout(60)  # bounded by connect_timeout, not the OS's TCP timeouts
def test_wrong_credentials_are_a_clear_error(tls_cluster, tmp_path):
    from distributed.security import Security

    other = Security.temporary()  # a CA the scheduler does not trust, and vice versa
    with pytest.raises(nf.ExecutorError) as info:
        _flow().run(executor=nf.DaskExecutor(tls_cluster.address, security=other,
                                             connect_timeout=3))
    assert tls_cluster.address in str(info.value)
    assert info.value.__cause__ is not None  # the TLS error is kept as the cause
