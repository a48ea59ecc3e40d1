"""The control database: accounts and API keys (later workspaces, caps, balances, credits).

Schema changes go through Alembic migrations in `services/edge/migrations`; `migrate()`
applies them at start-up.
"""

from edge.controldb.engine import create_engine_from_url
from edge.controldb.ids import API_KEY_PREFIX, hash_key, new_plain_key
from edge.controldb.keystore import (
    AccountNotFound,
    AuthenticatedKey,
    ControlDBError,
    DemoCredentials,
    InvalidPlainKey,
    KeyStore,
)
from edge.controldb.migrate import migrate
from edge.controldb.models import Account, ApiKey, Base

__all__ = [
    "API_KEY_PREFIX",
    "Account",
    "AccountNotFound",
    "ApiKey",
    "AuthenticatedKey",
    "Base",
    "ControlDBError",
    "DemoCredentials",
    "InvalidPlainKey",
    "KeyStore",
    "create_engine_from_url",
    "hash_key",
    "migrate",
    "new_plain_key",
]
