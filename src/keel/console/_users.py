"""Console users: names, roles and argon2 password hashes, kept in the store.

A user is one JSON record at ``console/users/<name>``::

    {"name": "ada", "role": "admin", "hash": "$argon2id$...", "created_at": ..., "updated_at": ...}

Passwords are hashed with argon2id (argon2-cffi's :class:`PasswordHasher`);
the clear text never reaches the store, a log or a page. There is no default
user: the first admin is made with `'keel console adduser NAME --role admin'`.
Records are decoded at one boundary (:func:`decode_user`); a malformed record
is skipped and counted, and a login against it fails like a wrong password.
"""

from __future__ import annotations

import asyncio
import enum
import re
import time
from dataclasses import dataclass

import msgspec
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from keel._records import Rejected, decode, report
from keel.errors import ConflictError, NotFoundError, ValidationError
from keel.store import Compare, Delete, Put, Store

__all__ = ["USERS_PREFIX", "Role", "User", "Users", "decode_user"]

USERS_PREFIX = "console/users/"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024


class Role(enum.IntEnum):
    """What a user may do; each role includes the ones below it."""

    VIEWER = 1
    """Reads every page (the store browser too, without secrets)."""
    OPERATOR = 2
    """Service, config, job and saga actions."""
    ADMIN = 3
    """Users, and writes in the store browser."""

    @classmethod
    def parse(cls, text: str) -> Role:
        """``"viewer"``/``"operator"``/``"admin"`` as a Role.

        Raises:
            ValidationError: any other text.
        """
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValidationError(f"role {text!r}: use viewer, operator or admin") from None

    @property
    def label(self) -> str:
        """The role's name in lower case."""
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class User:
    """A console user as read from the store (the hash stays out of ``repr``)."""

    name: str
    role: Role
    password_hash: str
    created_at: float
    updated_at: float
    mod_revision: int = 0

    def __repr__(self) -> str:
        return f"User(name={self.name!r}, role={self.role.label})"


class _Record(msgspec.Struct, forbid_unknown_fields=False):
    name: str
    role: str
    hash: str
    created_at: float = 0.0
    updated_at: float = 0.0


def decode_user(value: bytes) -> User:
    """Decode one user record.

    Raises:
        ValueError: not a user record (bad JSON, unknown role, bad name).
    """
    record = msgspec.json.decode(value, type=_Record)
    if not _NAME.match(record.name):
        raise ValueError(f"bad user name {record.name!r}")
    if not record.hash.startswith("$argon2"):
        raise ValueError("the hash is not an argon2 hash")
    return User(
        record.name, Role.parse(record.role), record.hash, record.created_at, record.updated_at
    )


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid user name.

    Raises:
        ValidationError: names are 1-64 of ``a-z 0-9 _ . -``, starting with a letter or digit.
    """
    if not _NAME.match(name):
        raise ValidationError(
            f"user name {name[:80]!r}: use 1-64 characters of a-z 0-9 _ . - "
            "starting with a letter or digit"
        )
    return name


def check_password(password: str) -> str:
    """Return ``password`` if it is long enough (never echoes it).

    Raises:
        ValidationError: shorter than 10 or longer than 1024 characters.
    """
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise ValidationError(
            f"the password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters long"
        )
    return password


class Users:
    """The console's users in ``store`` (add, passwd, set_role, remove, get, list, verify).

    Args:
        store: where users live.
        hasher: the argon2 hasher (default parameters of argon2-cffi: argon2id,
            64 MiB, 3 passes); tests may pass a cheaper one.
    """

    def __init__(self, store: Store, *, hasher: PasswordHasher | None = None) -> None:
        self.store = store
        self.hasher = hasher or PasswordHasher()
        self._dummy = ""  # a hash to verify against for unknown names, made on first need

    def __repr__(self) -> str:
        return f"Users(store={self.store!r})"

    async def get(self, name: str) -> User | None:
        """The user called ``name``, or None (also for a malformed record)."""
        if not _NAME.match(name):
            return None
        kv = await self.store.get(USERS_PREFIX + name)
        if kv is None:
            return None
        user = decode("console", kv.key, kv.value, decode_user)
        if isinstance(user, Rejected) or user.name != name:
            if isinstance(user, Rejected):
                report(user)
            return None
        return _with_revision(user, kv.mod_revision)

    async def list(self) -> list[User]:
        """Every valid user, by name (malformed records skipped and counted)."""
        kvs, _ = await self.store.range(USERS_PREFIX)
        users: list[User] = []
        for kv in kvs:
            user = decode("console", kv.key, kv.value, decode_user)
            if isinstance(user, Rejected):
                report(user)
                continue
            users.append(_with_revision(user, kv.mod_revision))
        return users

    async def add(self, name: str, password: str, role: Role) -> User:
        """Create a user.

        Raises:
            ValidationError: a bad name or password.
            ConflictError: the user exists already.
        """
        check_name(name)
        check_password(password)
        now = time.time()
        user = User(name, role, await self._hash(password), now, now)
        key = USERS_PREFIX + name
        result = await self.store.txn(
            [Compare.absent(key)],
            [Put(key, _encode(user))],
            [],
        )
        if not result.succeeded:
            raise ConflictError(
                f"user {name!r} exists: use 'keel console passwd {name}' to change it"
            )
        return user

    async def passwd(self, name: str, password: str) -> User:
        """Set ``name``'s password.

        Raises:
            NotFoundError: no such user.
            ValidationError: a bad password.
        """
        check_password(password)
        return await self._update(name, password_hash=await self._hash(password))

    async def set_role(self, name: str, role: Role) -> tuple[User, User]:
        """Change ``name``'s role; returns (before, after).

        Raises:
            NotFoundError: no such user.
            ConflictError: it would leave no admin.
        """
        before = await self._require(name)
        guards: tuple[Compare, ...] = ()
        if before.role is Role.ADMIN and role is not Role.ADMIN:
            guards = await self._other_admins(name)
        return before, await self._update(name, role=role, guards=guards)

    async def remove(self, name: str) -> User:
        """Delete ``name`` (its sessions end with it: see :class:`~keel.console.Sessions`).

        Raises:
            NotFoundError: no such user.
            ConflictError: ``name`` is the last admin.
        """
        user = await self._require(name)
        guards = await self._other_admins(name) if user.role is Role.ADMIN else ()
        key = USERS_PREFIX + name
        own = Compare.mod_revision(key, "==", user.mod_revision)
        result = await self.store.txn([own, *guards], [Delete(key)], [])
        if not result.succeeded:
            raise ConflictError(f"users changed while removing {name!r}: try again")
        return user

    async def verify(self, name: str, password: str) -> User | None:
        """The user if ``password`` is theirs, else None.

        An unknown name costs one argon2 verification too, so timing does not
        tell which names exist.
        """
        user = await self.get(name) if len(password) <= MAX_PASSWORD else None
        if user is None:
            if not self._dummy:
                self._dummy = await self._hash("keel-console-no-such-user")
            await self._verify(self._dummy, password[:MAX_PASSWORD] + "\0")
            return None
        if not await self._verify(user.password_hash, password):
            return None
        if self.hasher.check_needs_rehash(user.password_hash):
            user = await self._update(name, password_hash=await self._hash(password))
        return user

    async def _hash(self, password: str) -> str:
        # argon2 takes tens of milliseconds of CPU (and releases the GIL): off the event loop
        return await asyncio.to_thread(self.hasher.hash, password)

    async def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return await asyncio.to_thread(self.hasher.verify, password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    async def _require(self, name: str) -> User:
        user = await self.get(name)
        if user is None:
            raise NotFoundError(f"no console user {name!r}: 'keel console users' lists them")
        return user

    async def _other_admins(self, leaving: str) -> tuple[Compare, ...]:
        """Compares that hold while the other admins stay as they are (so one always remains).

        Two admins demoting each other at once: each change is guarded by the
        other's record, so the second one fails instead of leaving no admin.
        """
        admins = [u for u in await self.list() if u.role is Role.ADMIN and u.name != leaving]
        if not admins:
            raise ConflictError(f"{leaving!r} is the last admin: make another admin first")
        return tuple(
            Compare.mod_revision(USERS_PREFIX + u.name, "==", u.mod_revision) for u in admins
        )

    async def _update(
        self,
        name: str,
        *,
        role: Role | None = None,
        password_hash: str | None = None,
        guards: tuple[Compare, ...] = (),
    ) -> User:
        user = await self._require(name)
        updated = User(
            user.name,
            role if role is not None else user.role,
            password_hash if password_hash is not None else user.password_hash,
            user.created_at,
            time.time(),
        )
        key = USERS_PREFIX + name
        result = await self.store.txn(
            [Compare.mod_revision(key, "==", user.mod_revision), *guards],
            [Put(key, _encode(updated))],
            [],
        )
        if not result.succeeded:
            raise ConflictError(f"user {name!r} changed meanwhile: try again")
        return updated


def _encode(user: User) -> bytes:
    return msgspec.json.encode(
        {
            "name": user.name,
            "role": user.role.label,
            "hash": user.password_hash,
            "created_at": user.created_at,
            "updated_at": user.updated_at,
        }
    )


def _with_revision(user: User, revision: int) -> User:
    return User(
        user.name, user.role, user.password_hash, user.created_at, user.updated_at, revision
    )
