"""Standard Webhooks signatures, checked with the ``standardwebhooks`` library.

The library checks the ``webhook-id``, ``webhook-timestamp`` and
``webhook-signature`` headers, the HMAC and a timestamp window of five
minutes either way; ``tolerance_s`` narrows that window (never widens it).
"""

from __future__ import annotations

import binascii
import time
from collections.abc import Mapping

from standardwebhooks import Webhook, WebhookVerificationError

LIBRARY_TOLERANCE_S = 300.0


class SignatureError(Exception):
    """The webhook is not signed by the app: a one-line reason, safe to answer."""


def check_secret(secret: str) -> None:
    """``ValueError`` unless ``secret`` is a usable Standard Webhooks secret (``whsec_...``)."""
    try:
        Webhook(secret)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"is not a Standard Webhooks secret (whsec_<base64>): {exc}") from None
    except Exception as exc:  # the library raises its own for an empty one
        raise ValueError(f"is not a usable Standard Webhooks secret: {exc}") from None


class Verifier:
    """Checks that a body and its headers were signed with ``secret`` within ``tolerance_s``."""

    def __init__(self, secret: str, *, tolerance_s: float = LIBRARY_TOLERANCE_S) -> None:
        self._webhook = Webhook(secret)
        self.tolerance_s = min(tolerance_s, LIBRARY_TOLERANCE_S)

    def verify(self, body: str, headers: Mapping[str, str]) -> str:
        """The ``webhook-id`` of a correctly signed, fresh webhook; else ``SignatureError``."""
        lowered = {k.lower(): v for k, v in headers.items()}
        try:
            self._webhook.verify(body, lowered, json_parse=False)
        except WebhookVerificationError as exc:
            raise SignatureError(_reason(str(exc))) from None
        except (ValueError, binascii.Error):  # a malformed webhook-signature header
            raise SignatureError("The webhook-signature header is malformed.") from None
        stamp = float(lowered["webhook-timestamp"])  # the library parsed it already
        if abs(time.time() - stamp) > self.tolerance_s:
            raise SignatureError(
                f"The webhook-timestamp is more than {self.tolerance_s:g} s away from now."
            )
        return lowered["webhook-id"]


def _reason(library: str) -> str:
    known = {
        "Missing required headers": (
            "The webhook-id, webhook-timestamp and webhook-signature headers are required."
        ),
        "Invalid Signature Headers": "The webhook-timestamp header is not a Unix time.",
        "Message timestamp too old": "The webhook-timestamp is too old.",
        "Message timestamp too new": "The webhook-timestamp is in the future.",
        "No matching signature found": "No webhook-signature matches the body.",
    }
    return known.get(library, f"The webhook's signature is not valid: {library}.")
