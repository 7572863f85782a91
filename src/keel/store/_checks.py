"""Key and root checks of the store contract: the same refusal on every backend."""

from __future__ import annotations

from typing import Final

from keel.errors import InvalidKeyError, ValidationError

__all__ = ["MAX_KEY_BYTES", "check_key", "check_root"]

MAX_KEY_BYTES: Final = 4096


def check_key(key: object, *, allow_empty: bool = False) -> str:
    """Return ``key`` if it is a valid relative key, else raise InvalidKeyError."""
    if not isinstance(key, str):
        raise InvalidKeyError(f"key must be a str, not {type(key).__name__}: decode bytes first")
    if not key and not allow_empty:
        raise InvalidKeyError("key is empty: give a key such as 'services/orders/1'")
    if key.startswith("/"):
        raise InvalidKeyError(
            f"key {key!r} is outside the store's root: keys are relative to the root "
            f"(e.g. '{key.lstrip('/')}'); drop the leading '/' and the root prefix"
        )
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidKeyError(f"key is longer than {MAX_KEY_BYTES} bytes: use a shorter key")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidKeyError(
            f"key {key!r} is not valid UTF-8 ({exc.reason}): give the key as UTF-8 text"
        ) from exc
    return key


def check_root(root: str) -> str:
    """Return a normalized root prefix (leading and trailing '/'), or raise."""
    if not isinstance(root, str) or not root.strip("/"):
        raise ValidationError(f"root prefix {root!r} is empty: use something like '/keel/'")
    return "/" + root.strip("/") + "/"
