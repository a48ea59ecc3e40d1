"""People on the dashboard: users and their accounts, browser sessions, the email trial, and
the Stripe Checkout sessions that buy credits. Passwords arrive already hashed (the edge
hashes with argon2); browser-session tokens are stored only as SHA-256 digests."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controldb.ids import ACCOUNT_ID_PREFIX, random_id
from controldb.models import Account, CheckoutSession, CreditEntry, TrialGrant, User, WebSession
from controldb.money import AlreadyClaimed, CreditResult, Money

# Mail providers known to ignore dots in the local part ("j.doe" and "jdoe" are one inbox).
DOTLESS_DOMAINS = {"gmail.com": "gmail.com", "googlemail.com": "gmail.com"}


def normalized_address(email: str) -> str:
    """The inbox an address reaches, for once-per-person rules: case folded, "+tag" removed,
    and dots removed where the provider ignores them."""
    local, _, domain = email.strip().lower().rpartition("@")
    local = local.split("+", 1)[0]
    if domain in DOTLESS_DOMAINS:
        domain = DOTLESS_DOMAINS[domain]
        local = local.replace(".", "")
    return f"{local}@{domain}"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class SignedIn:
    user: User
    account: Account


class People:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], money: Money) -> None:
        self._sessions = sessions
        self._money = money

    # -- users ---------------------------------------------------------------------------

    async def sign_up(self, email: str, password_hash: str) -> User | None:
        """A new unverified user with an empty account, or None if the address is taken."""
        now = datetime.now(UTC)
        account = Account(id=random_id(ACCOUNT_ID_PREFIX), name=email, created_at=now)
        user = User(
            id=random_id("usr"),
            account_id=account.id,
            email=email,
            password_hash=password_hash,
            created_at=now,
        )
        try:
            async with self._sessions() as session, session.begin():
                session.add(account)
                await session.flush()
                session.add(user)
        except IntegrityError:
            return None
        return user

    async def by_email(self, email: str) -> User | None:
        async with self._sessions() as session:
            return await session.scalar(select(User).where(User.email == email))

    async def get(self, user_id: str) -> User | None:
        async with self._sessions() as session:
            return await session.get(User, user_id)

    async def verify(self, user_id: str) -> User | None:
        async with self._sessions() as session, session.begin():
            user = await session.get(User, user_id)
            if user is not None and user.verified_at is None:
                user.verified_at = datetime.now(UTC)
        return user

    async def grant_trial(self, user: User, amount_nano_usd: int) -> bool:
        """Credits the trial unless this inbox (normalised) ever had it; True if credited."""
        address = normalized_address(user.email)

        async def claim(session: AsyncSession) -> bool:
            if await session.get(TrialGrant, address) is not None:
                return False
            session.add(
                TrialGrant(
                    email_normalized=address,
                    account_id=user.account_id,
                    granted_at=datetime.now(UTC),
                )
            )
            await session.flush()
            return True

        try:
            await self._money.add_credits(
                user.account_id, "grant", amount_nano_usd, note="email trial", claim=claim
            )
        except (AlreadyClaimed, IntegrityError):
            return False
        return True

    async def set_password(self, user_id: str, password_hash: str) -> None:
        """New password; every browser signed in as this user is signed out."""
        async with self._sessions() as session, session.begin():
            await session.execute(
                update(User).where(User.id == user_id).values(password_hash=password_hash)
            )
            await session.execute(delete(WebSession).where(WebSession.user_id == user_id))

    # -- browser sessions ----------------------------------------------------------------

    async def open_session(self, user_id: str, lifetime: timedelta) -> str:
        token = secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        async with self._sessions() as session, session.begin():
            session.add(
                WebSession(
                    id=_digest(token), user_id=user_id, created_at=now, expires_at=now + lifetime
                )
            )
        return token

    async def signed_in(self, token: str) -> SignedIn | None:
        async with self._sessions() as session:
            row = (
                await session.execute(
                    select(User, Account)
                    .join(WebSession, WebSession.user_id == User.id)
                    .join(Account, Account.id == User.account_id)
                    .where(WebSession.id == _digest(token))
                    .where(WebSession.expires_at > datetime.now(UTC))
                )
            ).one_or_none()
        return None if row is None else SignedIn(row[0], row[1])

    async def close_session(self, token: str) -> None:
        async with self._sessions() as session, session.begin():
            await session.execute(delete(WebSession).where(WebSession.id == _digest(token)))

    async def close_all_sessions(self, user_id: str) -> None:
        async with self._sessions() as session, session.begin():
            await session.execute(delete(WebSession).where(WebSession.user_id == user_id))

    # -- credits -------------------------------------------------------------------------

    async def record_checkout(
        self, checkout_id: str, account_id: str, amount_nano_usd: int
    ) -> None:
        async with self._sessions() as session, session.begin():
            session.add(
                CheckoutSession(
                    id=checkout_id,
                    account_id=account_id,
                    amount_nano_usd=amount_nano_usd,
                    created_at=datetime.now(UTC),
                )
            )

    async def complete_checkout(
        self, checkout_id: str, event_id: str, payment_intent: str | None
    ) -> CreditResult | None:
        """Credits the purchase of a checkout session we opened, once: None if the session
        is unknown or was already completed (by this event or any other)."""
        async with self._sessions() as session:
            checkout = await session.get(CheckoutSession, checkout_id)
        if checkout is None:
            return None

        async def claim(session: AsyncSession) -> bool:
            marked = await session.execute(
                update(CheckoutSession)
                .where(CheckoutSession.id == checkout_id)
                .where(CheckoutSession.completed_at.is_(None))
                .values(
                    completed_at=datetime.now(UTC),
                    event_id=event_id,
                    payment_intent=payment_intent,
                )
            )
            return bool(getattr(marked, "rowcount", 0))

        try:
            return await self._money.add_credits(
                checkout.account_id,
                "purchase",
                checkout.amount_nano_usd,
                note=f"stripe {checkout_id}",
                claim=claim,
            )
        except (AlreadyClaimed, IntegrityError):
            return None

    async def checkouts(self, account_id: str, limit: int = 20) -> list[CheckoutSession]:
        async with self._sessions() as session:
            rows = await session.scalars(
                select(CheckoutSession)
                .where(CheckoutSession.account_id == account_id)
                .order_by(CheckoutSession.created_at.desc())
                .limit(limit)
            )
            return list(rows)

    async def credit_history(self, account_id: str, limit: int = 50) -> list[CreditEntry]:
        async with self._sessions() as session:
            rows = await session.scalars(
                select(CreditEntry)
                .where(CreditEntry.account_id == account_id)
                .order_by(CreditEntry.created_at.desc())
                .limit(limit)
            )
            return list(rows)
