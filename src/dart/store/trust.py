"""Whether to trust a store: loading one runs code from its pickles."""

from __future__ import annotations

import warnings

from dart.errors import DartWarning


def warn_if_foreign(store) -> None:
    """Warn when the store belongs to another user (it may hold crafted pickles)."""
    owner = store.backend.owner()
    if owner is not None and store.key is None:
        warnings.warn(
            f"store {store.location} belongs to {owner}, not to you: loading it runs code from its pickles. "
            "Load only stores you trust, or set DART_HMAC_KEY to the key it was written with so that dart "
            "refuses anything tampered with",
            DartWarning,
            stacklevel=3,
        )
