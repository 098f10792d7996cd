"""One serving process per SQLite file, enforced with an OS file lock.

Without Redis the bus and the live state live in one process's memory, and
so do the per-robot rules that depend on them: the last accepted timestamp
of each robot, and the single writer the hourly rollups expect. A second
server on the same SQLite file would break both without any error, so the
process that serves a SQLite file holds an exclusive ``flock`` on a sibling
``<database>.lock`` file for as long as it runs. The OS drops the lock when
the file is closed or the process dies, so a crash leaves nothing to clean up.

PostgreSQL and in-memory SQLite need no lock: the first is shared through
Redis by design, the second cannot be opened by another process.
"""

from __future__ import annotations

import logging
import os
from typing import IO

from sqlalchemy.engine import make_url

from fleethub.errors import FleethubError

try:
    import fcntl
except ImportError:  # Windows has no flock, and fleethub targets Linux
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)


class DatabaseInUse(FleethubError):
    """Another fleethub process already serves this SQLite database file."""

    code = "database_in_use"


def sqlite_lock_path(database_url: str) -> str | None:
    """Return the lock file path for a SQLite file URL, or None when none is needed."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        # NOTE: ``file:`` URIs (``?uri=true``) are not locked, because their
        # path is not a plain file name and they often name a shared-cache
        # in-memory database. A URI that names a real file goes unprotected.
        return None
    if url.query.get("mode") == "memory":
        return None
    return os.path.abspath(database) + ".lock"


class DatabaseLock:
    """An exclusive lock on a SQLite database file, held until :meth:`release`."""

    def __init__(self, path: str, handle: IO[bytes] | None) -> None:
        self.path = path
        self._handle = handle

    def release(self) -> None:
        """Release the lock. Calling it again does nothing."""
        if self._handle is not None:
            # Closing the file releases the flock. The lock file itself stays,
            # because deleting it could race with a process about to lock it.
            self._handle.close()
            self._handle = None


def lock_database(database_url: str) -> DatabaseLock | None:
    """Take the serving lock for ``database_url`` without waiting.

    Returns None when the URL needs no lock. Raises :class:`DatabaseInUse`
    when another process, or another server in this process, holds it.
    """
    path = sqlite_lock_path(database_url)
    if path is None:
        return None
    if fcntl is None:
        logger.warning(
            "database_lock_unsupported",
            extra={"lock_file": path, "reason": "no fcntl on this platform"},
        )
        return DatabaseLock(path, None)
    handle = open(path, "ab")  # kept open for as long as the lock is held
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise DatabaseInUse(
            "Another fleethub process is serving this SQLite database "
            f"(lock file {path}); stop it first, or use PostgreSQL and Redis "
            "to run several processes.",
            lock_file=path,
        ) from None
    except BaseException:
        handle.close()
        raise
    return DatabaseLock(path, handle)
