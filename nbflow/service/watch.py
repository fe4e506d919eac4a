"""The watched-folder trigger: each new file in a folder becomes one job, once complete.

``nbflow serve WORKFLOW --watch DIR`` runs a :class:`FolderWatch`. It listens on
inotify (through ``watchfiles``) and hands every new file to the service once the
file is *stable*: its size and modification time have not changed for ``stable``
seconds. A file written slowly in pieces therefore makes one job, with its final
content. Each file version is handed over with a dedup key made of its real path,
size and mtime, so the durable store never makes two jobs for one version, also
when a restarted service with ``existing=True`` finds the same files again.

Which files count:

- names that match ``pattern`` (``fnmatch`` on the file name, not the path);
- regular files only (a symlink counts as its target, if that is a regular file);
- in the top folder only, unless ``recursive``;
- never hidden names (``.*``, and anything under a hidden folder, such as a state dir
  kept inside the watched folder) nor names of files still being written
  (:data:`TEMPORARY_SUFFIXES`). Writing to such a name and renaming it when done is
  the reliable way to drop a file: the rename makes the file appear whole.

A path handed over always lies inside the watched folder: it is the file's resolved
path, checked with ``Path.resolve()``; a symlink that leads out of the folder is
refused with a warning and makes no job.
"""

from __future__ import annotations

import asyncio
import fnmatch
import inspect
import logging
import os
import stat as stat_mode
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..errors import ServiceError

__all__ = ["TEMPORARY_SUFFIXES", "FolderWatch", "Signature"]

logger = logging.getLogger(__name__)

#: file names ending so are still being written (downloads, editors, ``rsync --partial``)
TEMPORARY_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp", "~")

#: what identifies one version of a file: (size in bytes, mtime in ns)
Signature = tuple[int, int]


class FolderWatch:
    """Turns the new, stable files of one folder into ``submit(path, dedup_key)`` calls.

    Parameters
    ----------
    folder
        The folder to watch; it must exist (else :class:`~nbflow.errors.ServiceError`).
    pattern
        A glob on the file name (``fnmatch``), e.g. ``"*.csv"``.
    recursive
        Also watch the folders below ``folder``.
    param
        The workflow parameter that receives the file's path (read by the service).
    existing
        Also hand over the files already in the folder when :meth:`run` starts.
    stable
        Seconds a file's size and mtime must stay unchanged before it makes a job.
    """

    def __init__(self, folder: str | os.PathLike[str], *, pattern: str = "*", recursive: bool = False,
                 param: str = "path", existing: bool = False, stable: float = 1.0) -> None:
        given = Path(folder).expanduser()
        if not given.exists():
            msg = f"watched folder {str(given)!r} does not exist (--watch needs an existing folder)"
            raise ServiceError(msg)
        if not given.is_dir():
            msg = f"watched folder {str(given)!r} is not a folder (--watch needs a folder)"
            raise ServiceError(msg)
        if not stable >= 0:  # (also refuses NaN)
            msg = f"the stability time must be 0 seconds or more, not {stable!r} (--stable)"
            raise ServiceError(msg)
        _load_awatch()  # fail now, not when the service is up
        #: the watched folder, resolved: every path handed over lies inside it
        self.folder = given.resolve()
        self.pattern = pattern
        self.recursive = recursive
        #: the workflow parameter that receives the path (the service builds the job with it)
        self.param = param
        self.existing = existing
        self.stable = float(stable)
        #: set once the watcher listens (and, with ``existing``, the files there are seen)
        self.ready = asyncio.Event()
        #: files seen but not yet stable: path in the folder -> its last signature
        self._pending: dict[Path, Signature] = {}
        self._timers: dict[Path, asyncio.TimerHandle] = {}
        #: files handed over, with the version handed over (a rewrite makes a new job)
        self._done: dict[Path, Signature] = {}
        #: symlinks refused (warned about once, until they are removed)
        self._refused: set[Path] = set()
        self._submitting: set[asyncio.Future[Any]] = set()
        self._submit: Callable[[Path, str], object] = _not_running
        self._loop: asyncio.AbstractEventLoop  # run()'s

    def __repr__(self) -> str:
        return (f"FolderWatch({str(self.folder)!r}, pattern={self.pattern!r}, "
                f"recursive={self.recursive}, stable={self.stable})")

    @property
    def pending(self) -> Mapping[Path, Signature]:
        """The files seen and waiting to be stable (a read-only view): path -> (size, mtime_ns)."""
        return MappingProxyType(self._pending)

    async def run(self, submit: Callable[[Path, str], object], stop: asyncio.Event) -> None:
        """Call ``submit(path, dedup_key)`` once per new stable file, until ``stop`` is set.

        ``submit`` may return an awaitable, which is awaited in the background (and
        before ``run`` returns). An exception from it is logged; the watch goes on, and
        the file is tried again when it next changes. One run per instance; cancelling
        it also sets ``stop`` (``watchfiles`` does, to end its thread).
        """
        awatch = _load_awatch()
        self._loop = asyncio.get_running_loop()
        self._submit = submit
        # watchfiles hands changes over after `step` ms without a new one (50 by default):
        # a fifth of the stability time, so a short --stable is not dwarfed by it
        step = max(5, min(50, int(self.stable * 200)))
        changes = awatch(self.folder, watch_filter=None, recursive=self.recursive,
                         stop_event=stop, step=step)
        consumer = asyncio.ensure_future(self._consume(changes))
        try:
            # The consumer's first step opens the inotify watches, then waits in a worker
            # thread: after it, no file that appears is missed.
            await asyncio.sleep(0)
            if self.existing and not consumer.done():
                self._scan(self.folder)
            self.ready.set()
            await consumer
        except OSError as exc:  # the folder went away, or cannot be read
            msg = f"cannot watch folder {str(self.folder)!r}: {exc}"
            raise ServiceError(msg) from exc
        finally:
            consumer.cancel()
            for timer in self._timers.values():
                timer.cancel()
            self._timers.clear()
            self._pending.clear()
            self._submit = _not_running
            if self._submitting:
                await asyncio.gather(*self._submitting, return_exceptions=True)

    # -- what the watcher reports ------------------------------------------------------------

    async def _consume(self, changes: AsyncIterator[set[tuple[Any, str]]]) -> None:
        async for batch in changes:
            # A batch is a set: its order is lost, so each path is looked at as it is now.
            for path in sorted({Path(raw) for _, raw in batch}):
                if path == self.folder:
                    self._check_folder()
                else:
                    self._look_at(path, restart=True)

    def _check_folder(self) -> None:
        # inotify's watches go with the folder: one made again under its name is not watched
        if not self.folder.is_dir():
            logger.error("the watched folder %s was removed: no more jobs come from it "
                         "(restart the service once it is back)", self.folder)

    def _scan(self, top: Path) -> None:
        """Look at the files already under ``top`` (at start, or a folder moved in whole)."""
        if self.recursive:
            for dirpath, dirnames, filenames in os.walk(top):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in sorted(filenames):
                    self._look_at(Path(dirpath, name), restart=False)
        else:
            with os.scandir(top) as entries:
                names = sorted(e.name for e in entries if not e.is_dir())
            for name in names:
                self._look_at(top / name, restart=False)

    def _look_at(self, path: Path, *, restart: bool) -> None:
        """A path changed (``restart``: the stability clock starts again) or was found."""
        if not self._visible(path):
            return
        if not os.path.lexists(path):
            self._forget(path)
        elif path.is_dir():
            if self.recursive and not path.is_symlink():
                self._scan(path)  # its files came with no event of their own
        elif self._matches(path.name):
            self._examine(path, restart=restart)

    def _visible(self, path: Path) -> bool:
        """Inside the folder (at the right depth) and not hidden."""
        try:
            parts = path.relative_to(self.folder).parts
        except ValueError:
            return False
        if not parts or (len(parts) > 1 and not self.recursive):
            return False
        return not any(part.startswith(".") for part in parts)

    def _matches(self, name: str) -> bool:
        return not name.endswith(TEMPORARY_SUFFIXES) and fnmatch.fnmatch(name, self.pattern)

    # -- stability -----------------------------------------------------------------------------

    def _examine(self, path: Path, *, restart: bool) -> None:
        seen = self._signature(path)
        if seen is None:
            self._forget(path)
            return
        signature = seen[1]
        if self._done.get(path) == signature:
            return  # this version made its job already
        if not restart and self._pending.get(path) == signature:
            return
        self._pending[path] = signature
        self._start_clock(path)

    def _start_clock(self, path: Path) -> None:
        old = self._timers.pop(path, None)
        if old is not None:
            old.cancel()
        self._timers[path] = self._loop.call_later(self.stable, self._check, path)

    def _check(self, path: Path) -> None:
        """The clock ran out: hand the file over if it did not change meanwhile."""
        self._timers.pop(path, None)
        seen = self._signature(path)
        if seen is None:
            self._forget(path)
            return
        real, signature = seen
        if signature != self._pending.get(path):  # changed, and its event is not here yet
            self._pending[path] = signature
            self._start_clock(path)
            return
        del self._pending[path]
        self._done[path] = signature
        self._hand_over(path, real, signature)

    def _signature(self, path: Path) -> tuple[Path, Signature] | None:
        """The file's real path and version; None when it is gone, not a regular file,
        or a symlink that leads out of the folder (refused, with a warning)."""
        try:
            real = path.resolve()
        except (OSError, RuntimeError):  # a symlink loop (RuntimeError before Python 3.13)
            return None
        if not real.is_relative_to(self.folder):
            if path not in self._refused:
                self._refused.add(path)
                logger.warning("refused %s: it leads out of the watched folder %s (to %s)",
                               path, self.folder, real)
            return None
        try:
            # not following links: if a part of ``real`` became a link since, it is refused
            st = os.stat(real, follow_symlinks=False)
        except OSError:
            return None
        if not stat_mode.S_ISREG(st.st_mode):
            return None
        return real, (st.st_size, st.st_mtime_ns)

    def _forget(self, path: Path) -> None:
        """Drop what is known of a file that is gone (or of all files under a folder that is)."""
        timer = self._timers.pop(path, None)
        if timer is not None:
            timer.cancel()
        known = self._pending.pop(path, None) is not None
        known = self._done.pop(path, None) is not None or known
        if not os.path.lexists(path):
            self._refused.discard(path)
            if not known and self.recursive:
                below = [p for p in [*self._pending, *self._done] if p.is_relative_to(path)]
                for p in below:
                    self._forget(p)

    # -- handing over --------------------------------------------------------------------------

    def _hand_over(self, path: Path, real: Path, signature: Signature) -> None:
        size, mtime_ns = signature
        key = f"watch:{real}:{size}:{mtime_ns}"
        try:
            result = self._submit(real, key)
        except Exception:
            logger.exception("the watched file %s could not be submitted as a job", real)
            self._done.pop(path, None)  # try again when it next changes
            return
        logger.debug("watched file %s submitted (%s)", real, key)
        if inspect.isawaitable(result):
            future = asyncio.ensure_future(result)
            self._submitting.add(future)
            future.add_done_callback(lambda f: self._submitted(f, path, real))

    def _submitted(self, future: asyncio.Future[Any], path: Path, real: Path) -> None:
        self._submitting.discard(future)
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            logger.error("the watched file %s could not be submitted as a job", real,
                         exc_info=exc)
            self._done.pop(path, None)


def _not_running(path: Path, key: str) -> object:
    msg = "FolderWatch.run() is not running"
    raise RuntimeError(msg)


def _load_awatch() -> Callable[..., AsyncIterator[set[tuple[Any, str]]]]:
    """``watchfiles.awatch``, or an error naming the extra to install."""
    try:
        from watchfiles import awatch
    except ImportError as exc:
        msg = "--watch needs the watchfiles package: pip install 'nbflow[service]'"
        raise ServiceError(msg) from exc
    watch: Callable[..., AsyncIterator[set[tuple[Any, str]]]] = awatch
    return watch

