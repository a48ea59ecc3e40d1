"""The control database: accounts and API keys (later workspaces, caps, balances, credits).

Schema changes go through Alembic migrations in `services/controldb/migrations`; `migrate()`
applies them at start-up.
"""

from controldb.engine import create_engine_from_url
from controldb.ids import API_KEY_PREFIX, hash_key, new_plain_key
from controldb.keystore import (
    AccountNotFound,
    AuthenticatedKey,
    ControlDBError,
    DemoCredentials,
    InvalidPlainKey,
    KeyStore,
)
from controldb.migrate import migrate
from controldb.models import Account, ApiKey, Base

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
