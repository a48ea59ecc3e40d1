"""`python -m controldb migrate`: bring the control database to the newest schema and exit.

The Kubernetes migration Job and compose's one-shot `migrate` service run this before the
services start. The services still migrate at start-up themselves (a no-op when current),
so a laptop without the Job works the same.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from aig_common import logs
from controldb.engine import is_postgres
from controldb.migrate import migrate

USAGE = "usage: python -m controldb migrate   (reads AIG_DATABASE_URL)"
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///var/aig.db"


def main(argv: list[str]) -> int:
    if argv != ["migrate"]:
        print(USAGE, file=sys.stderr)
        return 2
    logs.configure("controldb", relay_native_stderr=True)
    url = os.environ.get("AIG_DATABASE_URL") or DEFAULT_DATABASE_URL
    asyncio.run(migrate(url))
    # The URL holds the password: name only the kind of database.
    logging.getLogger("controldb").info(
        "control database is at the newest schema (%s)",
        "PostgreSQL" if is_postgres(url) else "SQLite",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
