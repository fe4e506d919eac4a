"""``nbflow serve``: workflows as a service (see ``docs/service.md``).

Triggers (a watched folder, ``POST /jobs``, ``nbflow submit``) make jobs; a durable
queue in SQLite holds them; a dispatcher runs up to ``concurrency`` at once. Nothing
here is imported by the engine: the service sits above :class:`~nbflow.flow.Flow`.
"""

from .jobs import Job
from .service import Service

__all__ = ["Job", "Service"]
