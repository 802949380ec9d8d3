"""Talking to a benchmark's remote service: secrets from the environment, reachability, one HTTP request.

Secrets (a ToolBench key, a TMDB token) are read from the environment variable a config names, at the moment
they are needed, and never stored in a config, a task, a trajectory or a log: ``redact`` removes them from any
text that goes back to the model (a server that echoes its request cannot leak them into observations).

``http_request`` sends one request with the standard library and returns ``(status, body text)``; a network
failure or a timeout raises ``RemoteError`` with one line that says what happened, which the tool environment
turns into an error observation. ``unreachable`` is the cheap check a world runs when it is built, so a server
that is not running is one line at start-up instead of an error observation in every episode.
"""

from __future__ import annotations

import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable

from toolmaster.errors import ConfigError

REDACTED = "[redacted]"


class RemoteError(RuntimeError):
    """A request that got no HTTP answer (connection refused, timeout, DNS, TLS)."""


def read_secret(env_name: str, key: str, what: str) -> str:
    """The value of ``$env_name``; a one-line ConfigError naming ``key`` when it is unset or empty."""
    value = os.environ.get(env_name, "")
    if not value:
        raise ConfigError(
            f"{key}: environment variable {env_name} is not set; export {env_name}=<your {what}> "
            f"(or point {key} at another variable)"
        )
    return value


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every occurrence of each non-empty secret replaced by ``[redacted]``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def unreachable(url: str, timeout_s: float = 3.0) -> str | None:
    """Why nothing accepts a connection at ``url``'s host and port (None when something does)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"not an http(s) URL: {url!r}"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout_s):
            return None
    except OSError as exc:
        return f"{type(exc).__name__}: {exc.strerror or exc}"


def http_request(
    method: str,
    url: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout_s: float = 30.0,
) -> tuple[int, str]:
    """Send one request; ``(status, body)`` for any HTTP answer (4xx/5xx included), RemoteError otherwise."""
    request = urllib.request.Request(url, data=body, headers=dict(headers or {}), method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, response.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", errors="replace")
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            raise RemoteError(f"no answer from {_origin(url)} within {timeout_s:g} s") from None
        raise RemoteError(f"cannot reach {_origin(url)}: {reason}") from None
    except TimeoutError:
        raise RemoteError(f"no answer from {_origin(url)} within {timeout_s:g} s") from None
    except (ConnectionError, OSError) as exc:
        raise RemoteError(f"connection to {_origin(url)} failed: {type(exc).__name__}: {exc}") from None


def _origin(url: str) -> str:
    """scheme://host:port/path of ``url`` without its query (a query may carry values the model chose)."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
