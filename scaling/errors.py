"""The one exception type that reaches users as a single line, and what builds that line."""

from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit


class ClipscaleError(Exception):
    """Bad input or an unusable environment; the CLI prints it as one line and exits 2."""


def first_line(error: BaseException | str) -> str:
    """The first line of an error (or a tool's message): for a database error, its
    driver's own message."""
    lines = str(getattr(error, "orig", None) or error).strip().splitlines()
    return lines[0].strip() if lines else type(error).__name__


def redact(url: str) -> str:
    """A URL with its password replaced by ***: messages and logs must not carry it."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def redact_in(text: str, url: str) -> str:
    """``text`` (a library's error message) with the password of ``url`` masked wherever it
    appears: MLflow's HTTP errors, for one, repeat the whole URL they failed on."""
    password = urlsplit(url).password
    if not password:
        return text
    return text.replace(password, "***").replace(quote(password, safe=""), "***")
