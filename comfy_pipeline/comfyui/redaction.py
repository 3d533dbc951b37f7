"""Keep credentials out of anything a person or a log can read."""

from typing import Any
from urllib.parse import urlsplit, urlunsplit

MASK = "***"


def redact_url(url: str) -> str:
    """`https://user:pass@host:8188/x?token=t` -> `https://***@host:8188/x?token=***`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        query = "&".join(
            f"{k}={MASK}" if k.lower() in {"token", "api_key", "apikey", "key", "password"} else f"{k}={v}"
            for k, _, v in (item.partition("=") for item in query.split("&"))
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def scrub(text: str, secrets: "list[str | None] | tuple[str | None, ...]") -> str:
    """Replace every occurrence of each (non-trivial) secret in `text` by the mask."""
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, MASK)
    return text


def scrub_json(value: Any, secrets: "list[str | None] | tuple[str | None, ...]") -> Any:
    """`value` (parsed JSON from the server) with every string scrubbed: whatever a server or a proxy echoes back
    (an error body, a node's message, a WebSocket event) is clean before anything logs, raises or stores it."""
    if not any(secret and len(secret) >= 3 for secret in secrets):
        return value
    if isinstance(value, str):
        return scrub(value, secrets)
    if isinstance(value, list):
        return [scrub_json(item, secrets) for item in value]
    if isinstance(value, dict):
        return {scrub(str(k), secrets) if isinstance(k, str) else k: scrub_json(v, secrets) for k, v in value.items()}
    return value
