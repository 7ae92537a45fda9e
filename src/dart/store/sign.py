"""Signing a store's records with a secret key, so that tampering is refused.

With ``DART_HMAC_KEY`` (the key itself) or ``DART_HMAC_KEY_FILE`` (a file
holding it) set, every commit record carries an HMAC-SHA256 ``signature`` over
its content, its state names the index with a MAC of the index's bytes, and the
index carries a MAC of every pod (the pickles, which run code when loaded). A
reader with the key refuses a record, index or pod whose MAC does not match, and
a record with no signature. Object ids (xxh3-128) catch accidents; the key
catches intent. Buffer data (array bytes) is checked by its xxh3 hashes only:
it is data, not code.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from dart.errors import ConfigError


def key_from_environment() -> bytes | None:
    """The signing key from DART_HMAC_KEY or DART_HMAC_KEY_FILE, or None."""
    text = os.environ.get("DART_HMAC_KEY")
    if text:
        return text.encode()
    path = os.environ.get("DART_HMAC_KEY_FILE")
    if path:
        try:
            with open(path, "rb") as f:
                data = f.read().strip()
        except OSError as exc:
            raise ConfigError(
                f"DART_HMAC_KEY_FILE: cannot read the key file {path}: {exc.strerror or exc}; fix the path"
            ) from exc
        if not data:
            raise ConfigError(f"DART_HMAC_KEY_FILE: the key file {path} is empty; put a secret in it")
        return data
    return None


def mac(key: bytes, data) -> str:
    return hmac.new(key, memoryview(data), hashlib.sha256).hexdigest()


def matches(key: bytes, data, expected) -> bool:
    return isinstance(expected, str) and hmac.compare_digest(mac(key, data), expected)
