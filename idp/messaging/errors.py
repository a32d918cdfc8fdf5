"""The one failure every delivery backend reports."""

from __future__ import annotations


class DeliveryError(Exception):
    """A message could not be handed to its provider; the worker retries it later.

    The message is stored and logged, so it names the provider and what went wrong, and never
    carries the message body or a credential.
    """
