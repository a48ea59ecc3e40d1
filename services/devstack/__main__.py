"""`python -m devstack` (what `make up` runs): the whole gateway on this machine.

Secrets that the operator did not set are generated once and kept under var/, so a restart
keeps the same admin token, key pepper and demo key.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import httpx

from aig_common.money import parse_usd
from edge.settings import env_flag

from .stack import PROVIDER_KEYS, Stack, StackPorts, new_secret

DEMO_CREDITS_USD = "25.00"
VAR = Path(os.environ.get("AIG_VAR_DIR", "var")).resolve()


def _persisted(name: str, make: str) -> str:
    path = VAR / name
    if path.exists():
        return path.read_text().strip()
    VAR.mkdir(parents=True, exist_ok=True)
    path.write_text(make)
    path.chmod(0o600)
    return make


def _demo_key(stack: Stack) -> str:
    """Returns a working demo key, creating the demo account and key only when needed."""
    path = VAR / "demo.key"
    if path.exists():
        key = path.read_text().strip()
        probe = httpx.get(
            f"{stack.edge_url}/v1/models", headers={"authorization": f"Bearer {key}"}, timeout=10
        )
        if probe.status_code == 200:
            _top_up_if_empty(stack, key)
            return key
    admin = {"authorization": f"Bearer {stack.admin_token}"}
    account = httpx.post(
        f"{stack.edge_url}/admin/v1/accounts",
        json={"name": "demo", "credits_usd": DEMO_CREDITS_USD},
        headers=admin,
        timeout=10,
    ).json()
    created = httpx.post(
        f"{stack.edge_url}/admin/v1/keys",
        json={"account_id": account["id"], "name": "demo"},
        headers=admin,
        timeout=10,
    ).json()
    path.write_text(created["key"])
    path.chmod(0o600)
    return str(created["key"])


def _top_up_if_empty(stack: Stack, key: str) -> None:
    """A demo account whose credits ran out (or predate credits) gets its demo grant again."""
    me = httpx.get(
        f"{stack.edge_url}/v1/me", headers={"authorization": f"Bearer {key}"}, timeout=10
    ).json()
    if parse_usd(me["account"]["balance_usd"]) <= 0:
        httpx.post(
            f"{stack.edge_url}/admin/v1/accounts/{me['account']['id']}/credits",
            json={"amount_usd": DEMO_CREDITS_USD, "kind": "grant", "note": "demo top-up"},
            headers={"authorization": f"Bearer {stack.admin_token}"},
            timeout=10,
        ).raise_for_status()


def _banner(stack: Stack, key: str, sandboxed: list[str]) -> str:
    base = f"{stack.edge_url}/v1"
    upstreams = (
        "sandbox simulators for " + ", ".join(sandboxed) if sandboxed else "the real providers"
    )
    return f"""
aig is up — upstreams: {upstreams}.

  base URL     {base}
  API key      {key}
  admin token  {stack.admin_token}
  dashboard    {stack.edge_url}/dashboard  (sign up; the mails it sends are at {stack.mail_url})
  logs         {VAR / "logs"}

  curl {base}/chat/completions \\
    -H "Authorization: Bearer {key}" -H "Content-Type: application/json" \\
    -d '{{"model": "gpt-4o-mini", "messages": [{{"role": "user", "content": "Hello!"}}]}}'

  python - <<'PY'
from openai import OpenAI
client = OpenAI(base_url="{base}", api_key="{key}")
reply = client.chat.completions.create(
    model="claude-sonnet-4-5", messages=[{{"role": "user", "content": "Hello!"}}])
print(reply.choices[0].message.content)
PY

Every service and the broker are supervised: one that crashes is restarted with backoff,
and said so here. They all stop with this process, even if it is killed.
Press Ctrl-C to stop.
"""


def main() -> None:
    env = dict(os.environ)
    admin_token = env.get("AIG_ADMIN_TOKEN") or _persisted("admin.token", new_secret("aig-admin-"))
    pepper = env.get("AIG_KEY_PEPPER") or _persisted("key.pepper", new_secret(""))
    sandboxed = [name for name in PROVIDER_KEYS if not env.get(name)]
    stack = Stack(
        var_dir=VAR,
        ports=StackPorts(
            edge=int(env.get("AIG_EDGE_PORT", "8080")),
            router=int(env.get("AIG_ROUTER_PORT", "50051")),
            router_calls=int(env.get("AIG_ROUTER_CALLS_PORT", "50052")),
            router_ops=int(env.get("AIG_ROUTER_METRICS_PORT", "9464")),
            sandbox=int(env.get("AIG_SANDBOX_PORT", "8090")),
            billing=int(env.get("AIG_BILLING_PORT", "9465")),
            webhooks=int(env.get("AIG_WEBHOOKS_PORT", "9467")),
            smtp=int(env.get("AIG_MAILSINK_SMTP_PORT", "2525")),
            mail_http=int(env.get("AIG_MAILSINK_HTTP_PORT", "8025")),
            jobs=int(env.get("AIG_JOBS_PORT", "9466")),
        ),
        admin_token=admin_token,
        key_pepper=pepper,
        database_url=env.get("AIG_DATABASE_URL", f"sqlite+aiosqlite:///{VAR / 'aig.db'}"),
        env={name: env[name] for name in ("AIG_SMTP_URL",) if env.get(name)},
        with_sandbox=bool(sandboxed),
        in_process_router=env_flag(env.get("AIG_EDGE_IN_PROCESS_ROUTER", "")),
        result_url_secret=env.get("AIG_RESULT_URL_SECRET")
        or _persisted("result-url.secret", new_secret("")),
    )
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    router = "the edge with its router inside" if stack.in_process_router else "router, edge"
    print(
        f"starting aig (Kafka, sandbox, mail sink, billing, jobs, webhooks, {router})...",
        flush=True,
    )
    stack.start()
    try:
        key = _demo_key(stack)
        print(_banner(stack, key, [name.split("_")[0].lower() for name in sandboxed]), flush=True)
        stack.supervise(lambda line: print(line, flush=True))
        stopping.wait()
    except KeyboardInterrupt:
        pass
    finally:
        print("\nstopping aig...", flush=True)
        stack.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
