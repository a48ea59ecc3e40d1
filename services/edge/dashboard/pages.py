"""The signed-in dashboard: balance and tier, keys, workspaces and caps, spend, credits."""

from __future__ import annotations

import csv
import io
import logging
from datetime import UTC, date, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aig_common.money import NANO_PER_USD, parse_usd, percent, usd
from controldb import KeyStore
from controldb.limits import Limits, NotFound
from controldb.models import Account, ApiKey, Workspace
from controldb.money import PACKAGE_BONUS_BASIS_POINTS, Money, RefundNotAllowed
from controldb.people import SignedIn
from controldb.ratelimit import MAX_RPM_LIMIT
from controldb.tasks import TaskStore
from controldb.tiers import TIERS
from controldb.webhooks import WebhookStore

from ..billing_client import BillingClient
from ..money_api import cap_figures
from .charts import daily_bars, ranked_bars
from .payments import PACKAGES, PaymentError, Payments, WebhookRejected
from .web import PREFIX, SECURITY_HEADERS, PageError, Web, not_found, redirect

log = logging.getLogger("edge.dashboard")
PERIODS = (7, 30, 90)
CALLS_SHOWN = 50
CSV_ROWS = 10_000
OUTCOMES = ("succeeded", "failed")


# The dashboard's task list: the newest this many (the API pages through all of them).
TASKS_SHOWN = 50


def _utc_ms(moment_ms: int | None) -> str:
    if moment_ms is None:
        return ""
    return datetime.fromtimestamp(moment_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def tier_progress(account: Account) -> dict[str, Any]:
    """The account's tier and how much more 30-day spend reaches the next one."""
    current = next((t for t in TIERS if t.name == account.tier), TIERS[0])
    following = next((t for t in TIERS if t.min_spend_nano_usd > current.min_spend_nano_usd), None)
    progress: dict[str, Any] = {"name": current.name.capitalize(), "next": None}
    if following is not None:
        progress["next"] = {
            "name": following.name.capitalize(),
            "markup_basis_points": following.markup_basis_points,
            "missing_nano_usd": max(
                following.min_spend_nano_usd - account.rolling_30d_spend_nano_usd, 0
            ),
        }
    return progress


def _cap_param(form: dict[str, str], name: str) -> int | None:
    text = form.get(name, "").strip().lstrip("$")
    if not text:
        return None
    try:
        amount = parse_usd(text)
    except ValueError:
        raise PageError(400, "Not an amount", f"'{text[:20]}' is not an amount in USD.") from None
    if amount < 0:
        raise PageError(400, "Not an amount", "A cap cannot be negative.")
    return amount


def _rpm_limit(form: dict[str, str]) -> int | None:
    """A key's requests per minute from the form; empty: no limit."""
    text = form.get("rpm_limit", "").strip()
    if not text:
        return None
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_RPM_LIMIT:
        raise PageError(
            400,
            "Not a rate",
            f"A rate limit is a whole number of requests per minute, 1 to {MAX_RPM_LIMIT}.",
        )
    return int(text)


def _caps(form: dict[str, str]) -> dict[str, int | None]:
    return {
        "daily_cap_nano_usd": _cap_param(form, "daily_cap_usd"),
        "monthly_cap_nano_usd": _cap_param(form, "monthly_cap_usd"),
    }


class Pages:
    def __init__(
        self,
        web: Web,
        store: KeyStore,
        money: Money,
        limits: Limits,
        billing: BillingClient,
        tier_interval: timedelta,
        payments: Payments | None,
        tasks: TaskStore,
        webhooks: WebhookStore,
    ) -> None:
        self._tasks = tasks
        self._webhooks = webhooks
        self._web = web
        self._store = store
        self._money = money
        self._limits = limits
        self._billing = billing
        self._tier_interval = tier_interval
        self._payments = payments

    def routes(self) -> list[Route]:
        route = self._web.route
        return [
            route("", self.overview, ["GET"]),
            route("/", self.overview, ["GET"]),
            route("/keys", self.create_key, ["POST"]),
            route("/keys/{key_id}/caps", self.key_caps, ["POST"]),
            route("/keys/{key_id}/rate", self.key_rate, ["POST"]),
            route("/keys/{key_id}/revoke", self.revoke_key, ["POST"]),
            route("/workspaces", self.create_workspace, ["POST"]),
            route("/workspaces/{workspace_id}/caps", self.workspace_caps, ["POST"]),
            route("/account/caps", self.account_caps, ["POST"]),
            route("/usage", self.usage, ["GET"]),
            route("/usage.csv", self.usage_csv, ["GET"]),
            route("/tasks", self.tasks, ["GET"]),
            route("/credits", self.credits, ["GET"]),
            route("/credits/checkout", self.checkout, ["POST"]),
            route("/credits/refund", self.refund, ["POST"]),
            Route(f"{PREFIX}/stripe/webhook", self.stripe_webhook, methods=["POST"]),
        ]

    # -- overview, keys, workspaces, caps ------------------------------------------------

    async def overview(self, request: Request, new_key: dict[str, str] | None = None) -> Response:
        viewer = await self._web.viewer(request)
        if viewer is None:
            return redirect("/login")
        account = viewer.account
        keys = await self._store.list_keys(account.id)
        workspaces = await self._limits.list_workspaces(account.id)
        computed = account.tier_computed_at
        return self._web.render(
            request,
            "overview.html",
            viewer=viewer,
            account=account,
            tier=tier_progress(account),
            computed_at=computed,
            next_recompute=computed + self._tier_interval if computed else None,
            account_caps=await cap_figures(self._money, "account", account),
            keys=[
                {"key": key, "caps": await cap_figures(self._money, "key", key)}
                for key in keys
                if key.revoked_at is None
            ],
            revoked=[key for key in keys if key.revoked_at is not None],
            workspaces=[
                {"workspace": ws, "caps": await cap_figures(self._money, "workspace", ws)}
                for ws in workspaces
            ],
            workspace_names={ws.id: ws.name for ws in workspaces},
            new_key=new_key,
            api_base=f"{self._web.settings.public_url}/v1",
        )

    async def _owned(self, viewer: SignedIn, kind: str, object_id: str) -> ApiKey | Workspace:
        try:
            found = await self._limits.get(kind, object_id)
        except NotFound:
            raise not_found() from None
        assert isinstance(found, ApiKey | Workspace)
        if found.account_id != viewer.account.id:
            raise not_found()
        return found

    async def create_key(self, request: Request) -> Response:
        viewer = await self._web.require_viewer(request)
        form = await self._web.form(request)
        if viewer.user.verified_at is None:
            raise PageError(
                403,
                "Verify your email first",
                "Keys can be created once your email address is verified. "
                "Follow the link we mailed you, or send a new one from the dashboard.",
            )
        name = form.get("name", "").strip()[:200] or "key"
        workspace_id = form.get("workspace_id") or None
        if workspace_id is not None:
            await self._owned(viewer, "workspace", workspace_id)
        settings = {**_caps(form), "rpm_limit": _rpm_limit(form)}
        record, plain = await self._store.create_key(viewer.account.id, name)
        if workspace_id is not None:
            await self._limits.attach_key(record.id, workspace_id)
        if any(value is not None for value in settings.values()):
            await self._limits.set_caps("key", record.id, settings)
        response = await self.overview(request, new_key={"name": name, "secret": plain})
        return response

    async def key_caps(self, request: Request) -> Response:
        viewer = await self._web.require_viewer(request)
        form = await self._web.form(request)
        key = await self._owned(viewer, "key", request.path_params["key_id"])
        await self._limits.set_caps("key", key.id, _caps(form))
        return redirect("", "caps_saved")

    async def key_rate(self, request: Request) -> Response:
        viewer = await self._web.require_viewer(request)
        form = await self._web.form(request)
        key = await self._owned(viewer, "key", request.path_params["key_id"])
        await self._limits.set_caps("key", key.id, {"rpm_limit": _rpm_limit(form)})
        return redirect("", "rate_saved")

    async def revoke_key(self, request: Request) -> Response:
        viewer = await self._web.require_viewer(request)
        await self._web.form(request)
        key = await self._owned(viewer, "key", request.path_params["key_id"])
        await self._store.revoke_key(key.id)
        return redirect("", "key_revoked")

    async def create_workspace(self, request: Request) -> Response:
        viewer = await self._web.require_viewer(request)
        form = await self._web.form(request)
        name = form.get("name", "").strip()[:200]
        if not name:
            raise PageError(400, "Name needed", "Give the workspace a name.")
        await self._limits.create_workspace(viewer.account.id, name, _caps(form))
        return redirect("", "workspace_created")

    async def workspace_caps(self, request: Request) -> Response:
        viewer = await self._web.require_viewer(request)
        form = await self._web.form(request)
        workspace = await self._owned(viewer, "workspace", request.path_params["workspace_id"])
        await self._limits.set_caps("workspace", workspace.id, _caps(form))
        return redirect("", "caps_saved")

    async def account_caps(self, request: Request) -> Response:
        viewer = await self._web.require_viewer(request)
        form = await self._web.form(request)
        await self._limits.set_caps("account", viewer.account.id, _caps(form))
        return redirect("", "caps_saved")

    # -- spend ---------------------------------------------------------------------------

    def _window(self, request: Request) -> tuple[int, datetime, datetime]:
        text = request.query_params.get("days", "30")
        days = int(text) if text.isdigit() and int(text) in PERIODS else 30
        end = datetime.now(UTC)
        start = (end - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
        return days, start, end + timedelta(seconds=1)

    @staticmethod
    def _filters(request: Request) -> dict[str, str]:
        params = request.query_params
        filters = {name: params.get(name, "").strip()[:200] for name in ("model", "key_id")}
        if params.get("outcome") in OUTCOMES:
            filters["outcome"] = params["outcome"]
        return {name: value for name, value in filters.items() if value}

    async def _calls(
        self, account_id: str, start: datetime, end: datetime, filters: dict[str, str], limit: int
    ) -> list[dict[str, Any]]:
        params = {
            "account_id": account_id,
            "start": start.isoformat(),
            "end": end.isoformat(),
            "limit": str(limit),
            **filters,
        }
        return list((await self._billing.calls(params))["data"])

    async def usage(self, request: Request) -> Response:
        viewer = await self._web.require_viewer(request)
        account_id = viewer.account.id
        days, start, end = self._window(request)
        filters = self._filters(request)
        grouped: dict[str, list[dict[str, Any]]] = {}
        for group_by in ("day", "model", "key"):
            reply = await self._billing.usage(
                {
                    "account_id": account_id,
                    "start": start.isoformat(),
                    "end": end.isoformat(),
                    "group_by": group_by,
                }
            )
            grouped[group_by] = reply["data"]
        keys = await self._store.list_keys(account_id)
        key_names = {key.id: f"{key.name} ({key.key_prefix}…)" for key in keys}
        by_day = {row["day"]: parse_usd(row["billed_cost_usd"]) for row in grouped["day"]}
        day_series = [
            (day.isoformat(), by_day.get(day.isoformat(), 0))
            for day in (start.date() + timedelta(days=n) for n in range(days))
        ]
        by_model = [(row["model"], parse_usd(row["billed_cost_usd"])) for row in grouped["model"]]
        by_key = [
            (key_names.get(row["key_id"], row["key_id"]), parse_usd(row["billed_cost_usd"]))
            for row in grouped["key"]
        ]
        calls = await self._calls(account_id, start, end, filters, CALLS_SHOWN)
        total = sum(amount for _, amount in day_series)
        return self._web.render(
            request,
            "usage.html",
            viewer=viewer,
            days=days,
            periods=PERIODS,
            filters=filters,
            total_nano_usd=total,
            total_calls=sum(int(row["calls"]) for row in grouped["model"]),
            day_chart=daily_bars(f"Spend per day, last {days} days", day_series),
            model_chart=ranked_bars(f"Spend by model, last {days} days", by_model),
            key_chart=ranked_bars(f"Spend by key, last {days} days", by_key),
            by_model=sorted(by_model, key=lambda item: -item[1]),
            by_key=sorted(by_key, key=lambda item: -item[1]),
            models=sorted({model for model, _ in by_model}),
            keys=keys,
            key_names=key_names,
            calls=[{**call, "cost_nano_usd": parse_usd(call["billed_cost_usd"])} for call in calls],
            csv_query=str(request.url.query),
        )

    async def tasks(self, request: Request) -> Response:
        """The account's recent media tasks, each with its webhook deliveries and attempts."""
        viewer = await self._web.require_viewer(request)
        account_id = viewer.account.id
        page = await self._tasks.list_owned(account_id, limit=TASKS_SHOWN)
        keys = await self._store.list_keys(account_id)
        key_names = {key.id: f"{key.name} ({key.key_prefix}…)" for key in keys}
        return self._web.render(
            request,
            "tasks.html",
            viewer=viewer,
            tasks=[
                {
                    "task": task,
                    "created": _utc_ms(task.create_time_ms),
                    "completed": _utc_ms(task.complete_time_ms),
                    # What it cost, or what is held for it while it runs.
                    "cost_nano_usd": task.billed_nano_usd
                    if task.state in ("success", "fail")
                    else task.reserved_nano_usd,
                    "deliveries": await self._webhooks.deliveries_of_task(task.id, account_id),
                }
                for task in page.tasks
            ],
            shown=TASKS_SHOWN,
            key_names=key_names,
        )

    async def usage_csv(self, request: Request) -> Response:
        viewer = await self._web.require_viewer(request)
        _, start, end = self._window(request)
        calls = await self._calls(viewer.account.id, start, end, self._filters(request), CSV_ROWS)
        columns = (
            "time", "request_id", "key_id", "model", "provider", "outcome", "http_status",
            "error_code", "prompt_tokens", "completion_tokens", "billed_cost_usd", "attempts",
            "latency_ms", "streamed",
        )  # fmt: skip
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(columns)
        for call in calls:
            writer.writerow([call.get(column, "") for column in columns])
        filename = f"aig-calls-{date.today().isoformat()}.csv"
        return Response(
            out.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={
                **SECURITY_HEADERS,
                "content-disposition": f'attachment; filename="{filename}"',
            },
        )

    # -- credits -------------------------------------------------------------------------

    async def credits(self, request: Request) -> Response:
        viewer = await self._web.require_viewer(request)
        account_id = viewer.account.id
        return self._web.render(
            request,
            "credits.html",
            viewer=viewer,
            account=viewer.account,
            packages=[
                {
                    "whole": amount // NANO_PER_USD,
                    "bonus": percent(PACKAGE_BONUS_BASIS_POINTS[amount]),
                    "total_nano_usd": amount
                    + amount * PACKAGE_BONUS_BASIS_POINTS[amount] // 10_000,
                }
                for amount in PACKAGES
            ],
            payments=self._payments is not None,
            history=await self._web.people.credit_history(account_id),
            checkouts=await self._web.people.checkouts(account_id),
        )

    def _require_payments(self) -> Payments:
        if self._payments is None:
            raise PageError(
                503,
                "Payments are off",
                "This gateway takes no card payments (no Stripe keys are configured).",
            )
        return self._payments

    async def checkout(self, request: Request) -> Response:
        viewer = await self._web.require_viewer(request)
        form = await self._web.form(request)
        payments = self._require_payments()
        try:
            amount = parse_usd(form.get("package", ""))
            checkout = await payments.start_checkout(
                viewer.account.id,
                viewer.user.email,
                amount,
                f"{self._web.settings.public_url}{PREFIX}/credits",
            )
        except ValueError:
            raise PageError(400, "Unknown package", "Choose one of the credit packages.") from None
        except PaymentError as exc:
            raise PageError(502, "Payment not started", str(exc)) from None
        return Response(status_code=303, headers={**SECURITY_HEADERS, "location": checkout.url})

    async def refund(self, request: Request) -> Response:
        viewer = await self._web.require_viewer(request)
        form = await self._web.form(request)
        payments = self._require_payments()
        amount = _cap_param(form, "amount_usd")
        if not amount:
            raise PageError(400, "Not an amount", "Enter the amount to refund in USD.")
        account_id = viewer.account.id
        try:
            await self._money.add_credits(account_id, "refund", amount, note="dashboard refund")
        except RefundNotAllowed as exc:
            raise PageError(
                400,
                "Refund not possible",
                "Only unspent credits bought in the last 30 days can be refunded: "
                f"at most ${usd(exc.refundable)} now.",
            ) from None
        try:
            await payments.refund(await self._web.people.checkouts(account_id), amount)
        except PaymentError as exc:
            # The card was not refunded: give the credits back.
            await self._money.add_credits(
                account_id, "grant", amount, note="refund reversed: card refund failed"
            )
            raise PageError(502, "Refund failed", str(exc)) from None
        return redirect("/credits", "refunded")

    async def stripe_webhook(self, request: Request) -> Response:
        payments = self._payments
        if payments is None:
            return JSONResponse({"error": "payments are not configured"}, status_code=404)
        payload = await request.body()
        try:
            credited = await payments.handle_webhook(
                payload, request.headers.get("stripe-signature", "")
            )
        except WebhookRejected:
            return JSONResponse({"error": "signature verification failed"}, status_code=400)
        # 200 for anything verified, credited or not: Stripe stops resending it.
        return JSONResponse({"received": True, "credited": credited is not None})
