"""A logging filter that keeps tokens and private data out of the package's logs.

Records of every ``chat_security`` logger pass through :class:`RedactingFilter`
before any handler sees them: compact JWS/JWE strings become
``[redacted token]`` and the values of ``private`` / ``user_payload`` (in
arguments, ``extra`` attributes, dict reprs and ``key=value`` text) become
``[redacted]``. The message is formatted and frozen here, so a handler's
formatter cannot bring the raw arguments back; tracebacks are rendered to
text and scrubbed the same way, and the exception object is not passed on.

A filter attached to a logger does not see records of its child loggers, so
every module of the package takes its logger from :func:`get_logger`, which
attaches the filter to that logger. Nothing else in the process is touched:
other libraries' records and loggers stay as they are. The package logs no
token material in the first place (codes, kids, user ids, exception type
names); the filter is there for the day a careless line would.
"""

from __future__ import annotations

import binascii
import logging
import re
import threading
import traceback
from typing import Any

from .base64url import CHARACTER, decode_unpadded

NAMESPACE = "chat_security"
SENSITIVE_KEYS = frozenset({"private", "user_payload"})
REDACTED = "[redacted]"
REDACTED_TOKEN = "[redacted token]"

# Every pattern here runs on every record of the package, so each must stay linear
# in the length of the text: a match may only start where a segment starts (the
# lookbehind), and possessive quantifiers never hand back what they consumed, so
# a failed attempt costs its own length once instead of once per retry.
_SEGMENT = CHARACTER
# Three (JWS) or five (JWE) dot-separated base64url segments.
_COMPACT = re.compile(rf"(?<!{_SEGMENT}){_SEGMENT}{{4,}}+(?:\.{_SEGMENT}*+){{2,4}}+")
# Any long base64url run that starts like an encoded JSON object ('{"'), even
# inside a longer run ("user_payload_eyJ…"): an attempt fails within 15
# characters or consumes the whole run, so this one needs no lookbehind.
_JSON_B64 = re.compile(rf"eyJ{_SEGMENT}{{12,}}+(?:\.{_SEGMENT}*+)*+")
_KEY_VALUE = re.compile(
    r"""(?<![A-Za-z0-9_])(?P<q>['"]?)(?:private|user_payload)(?P=q)\s*+[:=]\s*+"""
)
# The value after "private=": a quoted string (backslash escapes; unterminated
# runs to the end), a bracketed structure, or a bare word.
_STRINGS = {q: rf"{q}(?:[^{q}\\]++|\\(?s:.)?)*+{q}?" for q in ("'", '"')}
_QUOTED = {q: re.compile(pattern) for q, pattern in _STRINGS.items()}
_BARE = re.compile(r"[^\s,;)}\]]*+")
# Inside brackets only these matter; runs of openers or closers count at once.
# A structure still open after _MAX_VALUE characters is redacted to the end of
# the text, so a hostile line costs at most that many steps of the Python loop.
_MAX_VALUE = 64 * 1024
_BRACKET_EVENT = re.compile(
    "|".join([r"(?P<open>[{(\[]++)", r"(?P<close>[)}\]]++)", *_STRINGS.values()])
)
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def _starts_like_json(segment: str) -> bool:
    try:
        head = decode_unpadded(segment[:16])
    except (binascii.Error, ValueError):
        return False
    return head.lstrip()[:1] == b"{"


def _token_sub(match: re.Match[str]) -> str:
    text = match.group(0)
    core = text.rstrip(".")  # a token at the end of a sentence
    segments = core.split(".")
    if len(segments) in (3, 5) and _starts_like_json(segments[0]):
        return REDACTED_TOKEN + text[len(core) :]
    return text


def _value_end(text: str, start: int) -> int:
    """Index just past the value that begins at ``start`` (bracket/quote aware)."""
    if start >= len(text):
        return start
    opener = text[start]
    if opener in _QUOTED:
        return _end(_QUOTED[opener].match(text, start), start)
    if opener in "{[(":
        depth = 0
        for event in _BRACKET_EVENT.finditer(text, start, start + _MAX_VALUE):
            run = event.end() - event.start()
            if event.lastgroup == "open":
                depth += run
            elif event.lastgroup == "close":
                if run >= depth:
                    return event.start() + depth
                depth -= run
        return len(text)  # unbalanced or too long: redact to the end, never leak the tail
    return _end(_BARE.match(text, start), start)


def _end(match: re.Match[str] | None, start: int) -> int:
    return match.end() if match else start


def scrub_text(text: str) -> str:
    """Redact tokens and ``private``/``user_payload`` values in formatted text."""
    text = _COMPACT.sub(_token_sub, text)
    text = _JSON_B64.sub(REDACTED_TOKEN, text)
    out, pos = [], 0
    # Search on from the end of each redacted value: nothing inside it is looked at twice.
    while (match := _KEY_VALUE.search(text, pos)) is not None:
        out.append(text[pos : match.end()])
        out.append(REDACTED)
        pos = _value_end(text, match.end())
    out.append(text[pos:])
    return "".join(out)


def scrub_value(value: Any, depth: int = 0) -> Any:
    """A copy of ``value`` with sensitive members and token strings redacted."""
    if depth > 20:
        return REDACTED
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {
            k: REDACTED if k in SENSITIVE_KEYS else scrub_value(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(scrub_value(v, depth + 1) for v in value)
    if isinstance(value, bytes | bytearray):
        return scrub_text(bytes(value).decode("ascii", "replace"))
    if getattr(value, "private", None) is not None:
        # e.g. VerifiedToken / ChatIdentity: never let their repr near a log.
        return f"<{type(value).__name__} {REDACTED}>"
    return value


def _message(record: logging.LogRecord) -> str:
    args = record.args
    if isinstance(args, dict):
        args = scrub_value(args)
    elif isinstance(args, tuple):
        args = tuple(scrub_value(a) for a in args)
    # The template is scrubbed only once formatted: redacting "private=%s" first
    # would break the formatting.
    msg = record.msg if isinstance(record.msg, str) else scrub_value(record.msg)
    try:
        text = str(msg) % args if args else str(msg)
    except (TypeError, ValueError, KeyError):
        # Logging would print the raw arguments with its error report: drop them.
        text = f"{msg} [arguments not shown: they do not fit the message]"
    return scrub_text(text)


class RedactingFilter(logging.Filter):
    """Scrubs a record in place; never drops it, never raises."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            record.msg = _message(record)
            record.args = None
            for key in list(record.__dict__):
                if key in SENSITIVE_KEYS:
                    record.__dict__[key] = REDACTED
                elif key not in _STANDARD:
                    record.__dict__[key] = scrub_value(record.__dict__[key])
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            # The exception object may hold the token in its args: only the
            # scrubbed text travels on (formatters print exc_text as it is).
            record.exc_info = None
            if record.exc_text:
                record.exc_text = scrub_text(record.exc_text)
            if record.stack_info:
                record.stack_info = scrub_text(record.stack_info)
        except Exception:  # noqa: BLE001 — fail closed: lose the message, not the secret
            record.msg, record.args = "[log record redacted: it could not be scrubbed]", None
            record.exc_info = record.exc_text = record.stack_info = None
        return True


_filter = RedactingFilter()
_lock = threading.Lock()


def where(exc: BaseException) -> str:
    """Where an unexpected error happened (file:line), never what it carried."""
    frames = traceback.extract_tb(exc.__traceback__)
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"


def in_namespace(name: str) -> bool:
    return name == NAMESPACE or name.startswith(NAMESPACE + ".")


def guard(logger: logging.Logger) -> None:
    """Attach the redacting filter to ``logger`` (once)."""
    if _filter not in logger.filters:
        with _lock:
            if _filter not in logger.filters:
                logger.addFilter(_filter)


def get_logger(name: str) -> logging.Logger:
    """The package's logger ``name`` (``chat_security`` or below), its records redacted."""
    if not in_namespace(name):
        raise ValueError(f"{name!r} is not a {NAMESPACE} logger")
    logger = logging.getLogger(name)
    guard(logger)
    return logger


def install() -> None:
    """Guard ``chat_security`` and every ``chat_security.*`` logger that exists now.

    The package's modules guard their own loggers already (:func:`get_logger`);
    this covers one made otherwise before the app was ready.
    """
    guard(logging.getLogger(NAMESPACE))
    for name in list(logging.Logger.manager.loggerDict):
        if in_namespace(name):
            guard(logging.getLogger(name))
