"""Digits as people type them: a Persian or Arabic keyboard types its own digits.

Every code (one-time, authenticator, recovery) and every phone number is read through
:func:`ascii_digits` before it is compared or parsed, so that ``۶۱۴۲۰۰`` is the code ``614200``
and not a wrong code that spends one of its tries. Only these two scripts are read: other digits
(fullwidth, superscript) stay what they are, and a code made of them is simply wrong.
"""

from __future__ import annotations

PERSIAN = "۰۱۲۳۴۵۶۷۸۹"  # U+06F0 to U+06F9, the Persian (Extended Arabic-Indic) digits
ARABIC_INDIC = "٠١٢٣٤٥٦٧٨٩"  # U+0660 to U+0669
_TO_ASCII = str.maketrans(PERSIAN + ARABIC_INDIC, "0123456789" * 2)


def ascii_digits(text: str) -> str:
    """``text`` with its Persian and Arabic-Indic digits written as the ASCII digits they mean."""
    return text.translate(_TO_ASCII)
