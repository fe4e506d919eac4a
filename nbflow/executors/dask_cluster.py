"""The ``LocalCluster`` nbflow starts itself, and the asynchronous clients on the scheduler loop.

- :func:`local_cluster` starts one ``LocalCluster`` per process (on first use)
  and returns it on later calls; it is closed at interpreter exit, or by
  :func:`close_local_cluster`. It runs on distributed's own loop thread, so it
  outlives runs and scheduler-loop restarts.
- :func:`connect` returns an asynchronous ``Client`` on the running (scheduler)
  loop for an address, one per loop and address, reused by every run. nbflow
  never closes a remote scheduler; it only drops its connection. A malformed
  address, a scheduler that does not answer and a server that answers but is
  no dask scheduler are each one :class:`~nbflow.errors.ExecutorError`, and the
  client that failed is closed at once (left to ``Client.__del__``, it printed
  a traceback at interpreter exit).
- :func:`reset` (for tests) drops every connection and closes the local cluster.

Settings of the local cluster, chosen for workflow runs (many small tasks,
results kept on the workers): ``worker-saturation`` is ``inf`` (no root-task
queuing: nbflow hands dask only ready work, so holding it back only adds
latency), the dashboard listens on 127.0.0.1 only, and worker logs below
WARNING are silenced.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ExecutorError

if TYPE_CHECKING:
    from distributed import Client, LocalCluster

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_local: LocalCluster | None = None
_local_options: dict[str, Any] = {}


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:  # pragma: no cover - the [dask] extra is missing
        msg = "the dask executor needs dask.distributed: pip install 'nbflow[dask]'"
        raise ExecutorError(msg) from exc
    return distributed


def default_options() -> dict[str, Any]:
    """Worker count and threads of the cluster nbflow starts (2 cores: 2 x 1)."""
    cpus = os.cpu_count() or 1
    workers = min(cpus, 4)
    return {"n_workers": workers, "threads_per_worker": max(1, cpus // workers),
            "processes": True}


def local_cluster(n_workers: int | None = None, threads_per_worker: int | None = None,
                  processes: bool | None = None) -> LocalCluster:
    """The process-wide ``LocalCluster`` (started now if there is none).

    Blocks while it starts (about a second with processes): never call it on the
    scheduler loop. Options given here that differ from the running cluster's
    restart it; options left out keep whatever runs.
    """
    global _local
    wanted = {k: v for k, v in (("n_workers", n_workers), ("threads_per_worker",
              threads_per_worker), ("processes", processes)) if v is not None}
    with _lock:
        if _local is not None and _alive(_local):
            if all(_local_options.get(k) == v for k, v in wanted.items()):
                return _local
            _close(_local)
            _local = None
        options = {**default_options(), **wanted}
        _local = _start(options)
        _local_options.clear()
        _local_options.update(options)
        return _local


def current_local_cluster() -> LocalCluster | None:
    """The cluster :func:`local_cluster` started, if it still runs."""
    cluster = _local
    return cluster if cluster is not None and _alive(cluster) else None


def dashboard_link(conn: Connection) -> str | None:
    """The dashboard URL of the cluster behind ``conn`` (None when it runs none).

    For the local cluster nbflow started, the dashboard listens on 127.0.0.1 only,
    while dask builds the link from the machine's address (for in-process workers):
    that link would not open, so this one names 127.0.0.1.
    """
    local = current_local_cluster()
    if local is not None and str(local.scheduler_address) == conn.address:
        server = getattr(getattr(local, "scheduler", None), "http_server", None)
        port = getattr(server, "port", None)
        return f"http://127.0.0.1:{port}/status" if port else None
    try:
        link = conn.client.dashboard_link
    except Exception:  # no dashboard service, or the scheduler did not say
        return None
    return str(link) if link else None


def _alive(cluster: Any) -> bool:
    return getattr(cluster, "status", None) is not None and cluster.status.name == "running"


def _start(options: dict[str, Any]) -> LocalCluster:
    distributed = _import_distributed()
    import dask

    kwargs: dict[str, Any] = {
        "n_workers": options["n_workers"],
        "threads_per_worker": options["threads_per_worker"],
        "processes": options["processes"],
        "dashboard_address": "127.0.0.1:0" if _has_bokeh() else None,
        "silence_logs": logging.WARNING,
    }
    if options["processes"]:
        kwargs["host"] = "127.0.0.1"  # (processes=False + host= crashes: TOOLCHAIN.md 5)
    with dask.config.set({"distributed.scheduler.worker-saturation": float("inf")}):
        cluster = distributed.LocalCluster(**kwargs)
    atexit.register(close_local_cluster)
    logger.info("started %s (dashboard %s)", cluster, cluster.dashboard_link)
    return cluster  # type: ignore[no-any-return]


def _has_bokeh() -> bool:
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return False
    return True


def _close(cluster: Any) -> None:
    try:
        cluster.close(timeout=10)
    except Exception:  # closing at exit: nothing useful to do about it
        logger.debug("closing the local cluster failed", exc_info=True)


def local_worker_pids() -> set[int]:
    """The process ids of the workers of the cluster nbflow started (empty when none runs)."""
    cluster = _local
    pids: set[int] = set()
    for worker in list(getattr(cluster, "workers", {}).values()):
        pid = getattr(worker, "pid", None)  # a nanny has one; an in-process worker does not
        if pid is not None:
            pids.add(int(pid))
    return pids


def close_local_cluster() -> None:
    """Close the cluster nbflow started (a no-op when none runs)."""
    global _local
    with _lock:
        cluster, _local = _local, None
        _local_options.clear()
    if cluster is not None:
        _close(cluster)


# -- connections on the scheduler loop ------------------------------------------------------


@dataclass
class Connection:
    """An asynchronous client on one loop, with the topic its workers report on."""

    client: Client
    address: str
    #: the credentials it was made with (kept alive: connections are found by its id)
    security: Any = None
    topic: str = field(default_factory=lambda: f"nbflow-{uuid.uuid4().hex[:12]}")
    #: who wants the report of a dask key (others are dropped)
    wanted: dict[str, Callable[[dict[str, Any]], None]] = field(default_factory=dict)

    def on_event(self, event: tuple[float, Sequence[dict[str, Any]]]) -> None:
        """A worker's batch of reports (see ``dask_worker._Reporter``; msgpack makes it a
        tuple over TCP, in-process it stays a list)."""
        for msg in event[1]:
            listener = self.wanted.pop(str(msg.get("key")), None)
            if listener is not None:
                listener(msg)

    @property
    def alive(self) -> bool:
        return str(getattr(self.client, "status", "")) in ("running", "connecting", "newly-created")


#: by (loop id, address, security object id): other credentials mean another connection
_connections: dict[tuple[int, str, int], Connection] = {}
_pending: dict[tuple[int, str, int], asyncio.Future[Connection]] = {}


async def connect(address: str, security: Any = None, timeout: float = 10.0) -> Connection:
    """The connection to ``address`` with ``security`` for the running loop (made now if
    needed)."""
    loop = asyncio.get_running_loop()
    key = (id(loop), address, id(security))
    conn = _connections.get(key)
    if conn is not None and conn.alive:
        return conn
    waiting = _pending.get(key)
    if waiting is not None:
        return await asyncio.shield(waiting)
    future: asyncio.Future[Connection] = loop.create_future()
    _pending[key] = future
    try:
        conn = await _open(address, security, timeout)
        _connections[key] = conn
        future.set_result(conn)
        return conn
    except BaseException as exc:
        future.set_exception(exc)
        future.exception()  # retrieved: a second waiter, if any, re-raises it
        raise
    finally:
        del _pending[key]


async def _open(address: str, security: Any, timeout: float) -> Connection:
    distributed = _import_distributed()
    _check_address(address)
    if address.startswith("tls://") and security is None:
        msg = (f"the dask scheduler at {address} speaks TLS: pass its credentials, "
               "nf.DaskExecutor(address, security=distributed.security.Security(tls_ca_file=..., "
               "tls_client_cert=..., tls_client_key=..., require_encryption=True))")
        raise ExecutorError(msg)
    client = distributed.Client(address, asynchronous=True, security=security, timeout=timeout,
                                set_as_default=False)
    try:
        await asyncio.wait_for(client, timeout + 5)
    except BaseException as exc:
        # A client that did not start must be closed here, on its loop: left to the
        # garbage collector, Client.__del__ closes it synchronously from whichever
        # thread collects it, and at interpreter exit that prints a TimeoutError
        # traceback ("Exception ignored in: Client.__del__").
        await _discard(client)
        if not isinstance(exc, Exception):
            raise  # a cancel or an interrupt: not a connection problem
        raise _connect_error(address, timeout, exc) from exc
    _quicken(client)
    conn = Connection(client, address, security)
    client.subscribe_topic(conn.topic, conn.on_event)
    return conn


def _check_address(address: str) -> None:
    """Refuse an address dask cannot parse (no port, an unknown scheme) in one line."""
    from distributed.comm.addressing import get_address_host_port, parse_address
    from distributed.comm.registry import get_backend

    try:
        scheme, _ = parse_address(address)
        get_backend(scheme)  # an unknown scheme
        if scheme in ("tcp", "tls", "ws", "wss"):
            get_address_host_port(address)
    except ValueError as exc:
        msg = (f"{address!r} is not a dask scheduler address ({exc}); write it as "
               "tcp://host:port, the address `dask scheduler` prints")
        raise ExecutorError(msg) from None


def _connect_error(address: str, timeout: float, exc: BaseException) -> ExecutorError:
    """What went wrong while connecting to ``address``, in one line."""
    if isinstance(exc, (OSError, asyncio.TimeoutError, TimeoutError)):
        return ExecutorError(
            f"cannot reach the dask scheduler at {address} within {timeout:g}s "
            f"({type(exc).__name__}: {exc}). Check that it runs, that the address and port are "
            "right (dask scheduler prints them) and that they are the scheduler's, or use "
            "nf.DaskExecutor() for a local cluster.")
    if isinstance(exc, (MemoryError, ValueError, TypeError, KeyError)) or \
            type(exc).__module__.startswith("msgpack"):
        # what dask's protocol reader makes of bytes that are not dask messages
        # (an HTTP server's answer reads as a frame of exabytes: a MemoryError)
        return ExecutorError(
            f"{address} answered, but not as a dask scheduler ({type(exc).__name__}). Check "
            "the port: it must be the scheduler's (dask scheduler prints 'Scheduler at: "
            "tcp://host:port'), not its dashboard's or another server's.")
    return ExecutorError(
        f"cannot connect to the dask scheduler at {address}: {type(exc).__name__}: {exc}")


async def _discard(client: Any) -> None:
    """Close a client that failed to start, so that nothing is left to close at exit."""
    try:
        await asyncio.wait_for(client.close(), 10)
    except Exception:  # it never got far: nothing to close there
        logger.debug("closing a client that did not start failed", exc_info=True)
    if str(getattr(client, "status", "closed")) != "closed":
        # Client.__del__ does nothing for a closed client; a half-started one that
        # could not close cleanly has nothing left worth closing synchronously at exit.
        client.status = "closed"


#: seconds between two batches of messages from nbflow's client to the scheduler
CLIENT_SEND_INTERVAL = 0.001


def _quicken(client: Any) -> None:
    """Send submissions to the scheduler within ~1 ms instead of distributed's 10 ms.

    nbflow submits a task when its upstreams finished, so every hop of a chain
    waits once for the client's batched stream (``BatchedSend(interval="10ms")``
    in distributed.Client). nbflow already batches what it submits (one
    ``client.map`` per ready set), so a shorter interval costs few messages and
    takes ~5 ms off each hop. The stream is not public API: if it is missing,
    nothing changes.
    """
    stream = getattr(client, "scheduler_comm", None)
    if stream is not None and hasattr(stream, "interval"):
        stream.interval = CLIENT_SEND_INTERVAL


async def drop_connections() -> None:
    """Close this loop's clients (the clusters themselves keep running)."""
    loop = asyncio.get_running_loop()
    for key in [k for k in _connections if k[0] == id(loop)]:
        conn = _connections.pop(key)
        try:
            await conn.client.close()  # type: ignore[no-untyped-call]
        except Exception:
            logger.debug("closing the client of %s failed", conn.address, exc_info=True)


def reset() -> None:
    """Drop every connection and close the local cluster (for tests and ``%nbflow reset``)."""
    from ..loop import get_loop_thread

    lt = get_loop_thread()
    if _connections:
        try:
            lt.run_sync(drop_connections(), timeout=30)
        except Exception:
            logger.debug("dropping dask connections failed", exc_info=True)
    _connections.clear()
    close_local_cluster()
