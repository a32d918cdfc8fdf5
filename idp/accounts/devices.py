"""What a person would call the device behind a session: "Chrome on Linux", from its user agent.

``ua-parser`` keeps the patterns current and caches each string it has parsed, so listing sessions
on every visit to ``/account`` costs one parse per distinct browser.
"""

from __future__ import annotations

UNKNOWN = "Unknown device"
MAX_USER_AGENT = 512


def describe(user_agent: str | None) -> str:
    """Browser and operating system; whichever part is not recognised is left out."""
    if not user_agent:
        return UNKNOWN
    import ua_parser  # here: only /account lists devices, and it brings PyYAML (1 MB a process between them)

    parsed = ua_parser.parse(user_agent[:MAX_USER_AGENT])
    browser = parsed.user_agent.family if parsed.user_agent else None
    system = parsed.os.family if parsed.os else None
    if browser and system:
        return f"{browser} on {system}"
    if browser:
        return browser
    if system:
        return f"A device on {system}"
    return UNKNOWN
