from __future__ import annotations

import logging
import sys
import time
import uuid
from pathlib import Path

import jwt
import pytest

from chat_security import log as cs_log
from chat_security.identity_types import ChatIdentity
from chat_security.tokens import VerifiedToken

JWS = jwt.encode({"sub": "u-1", "email": "leak@example.com"}, "k" * 32, algorithm="HS256")
# A compact JWE's shape (five parts, JSON header); the content does not matter here.
JWE = (
    "eyJhbGciOiJSU0EtT0FFUC0yNTYiLCJlbmMiOiJBMjU2R0NNIn0."
    "OvflhPRqeoaMg_FhfJYA5rmkQ5WHb-Ocxx.RKQ5cvd3mOpTOH4p.shDVFQH45ROrNVsTiKa7uU9.RKQ5cvd3mOpT"
)
SECRET = "PRIVATE-VALUE-9f8e7d"


@pytest.fixture
def logger(caplog):
    # A package logger made after apps.ready, the way every module makes its own.
    name = f"chat_security.test_{uuid.uuid4().hex[:8]}"
    caplog.set_level(logging.DEBUG, logger="chat_security")
    return cs_log.get_logger(name)


def logged(caplog) -> str:
    return "\n".join(
        r.getMessage() + repr(r.__dict__) + (r.exc_text or "") + (r.stack_info or "")
        for r in caplog.records
    )


def test_installed_by_apps_ready():
    assert any(
        isinstance(f, cs_log.RedactingFilter) for f in logging.getLogger("chat_security").filters
    )


def test_tokens_in_message_and_args_are_redacted(logger, caplog):
    logger.info("token " + JWS)
    logger.info("token %s and %s.", JWS, JWE)
    logger.info("header only %s", JWS.split(".")[0] + "." + JWS.split(".")[1])
    logger.info("bytes %s", JWS.encode())
    text = logged(caplog)
    assert JWS not in text and JWE not in text
    assert JWS.split(".")[1] not in text  # the claims segment
    assert "[redacted token]" in caplog.records[0].getMessage()
    assert caplog.records[1].getMessage() == "token [redacted token] and [redacted token]."


def test_private_and_user_payload_values_are_redacted(logger, caplog):
    logger.debug("claims %s", {"sub": "u", "user_payload": JWE, "private": {"card": SECRET}})
    logger.debug("kw %(private)s", {"private": SECRET})
    logger.debug("text private=%s user_payload: %s", SECRET, SECRET)
    logger.debug('json {"private": {"a": [1, "%s"]}, "ok": 1}', SECRET)
    logger.debug("extra", extra={"private": SECRET, "user_payload": SECRET, "other": JWS})
    text = logged(caplog)
    assert SECRET not in text and JWE not in text and JWS not in text
    assert caplog.records[0].getMessage() == (
        "claims {'sub': 'u', 'user_payload': [redacted], 'private': [redacted]}"
    )
    assert caplog.records[3].getMessage() == 'json {"private": [redacted], "ok": 1}'
    assert caplog.records[4].private == "[redacted]"


def test_objects_carrying_private_data_are_not_rendered(logger, caplog):
    verified = VerifiedToken(
        user_id="u",
        header={},
        claims={"user_payload": JWE},
        kid="k",
        key_kind="secret",
        key_state="active",
        private={"card": SECRET},
    )
    identity = ChatIdentity.verified(verified)
    logger.warning("got %s %r", verified, identity)
    text = logged(caplog)
    assert SECRET not in text and JWE not in text


def test_tracebacks_are_scrubbed(logger, caplog):
    try:
        raise ValueError(f"bad token {JWS} private={SECRET}")
    except ValueError:
        logger.exception("failed")
    logger.info("stack", stack_info=True, extra={"note": f"user_payload: {SECRET}"})
    record = caplog.records[0]
    assert record.exc_text and "ValueError" in record.exc_text
    text = logged(caplog)
    assert JWS not in text and SECRET not in text
    # What a handler's formatter prints is scrubbed as well.
    formatted = logging.Formatter("%(message)s %(note)s").format(caplog.records[1])
    assert SECRET not in formatted


def test_ordinary_messages_are_untouched(logger, caplog):
    messages = [
        "private key loaded for svc-abc (3072 bits)",
        "Cache-Control: private, no-store",
        "GET /chat/api/messages 200 in 3.2 ms from mail.example.com",
        "private_keys: ['a', 'b']",
        "100%",
    ]
    for message in messages:
        logger.info(message)
    assert [r.getMessage() for r in caplog.records] == messages


def test_bad_format_arguments_never_raise(logger, caplog):
    logger.info("%s %s", "only one")
    logger.info("%(missing)s", {"other": JWS})
    assert len(caplog.records) == 2
    assert JWS not in logged(caplog)


def test_unscrubbable_records_fail_closed(logger, caplog):
    class Hostile:
        def __str__(self):
            raise RuntimeError(SECRET)

        @property
        def private(self):
            raise RuntimeError("no")

    logger.info("value %s", Hostile())
    assert caplog.records[0].getMessage() == "[log record redacted: it could not be scrubbed]"


def test_other_loggers_are_not_touched(caplog):
    caplog.set_level(logging.INFO, logger="somebody_else")
    logging.getLogger("somebody_else").info("token %s", JWS)
    assert JWS in caplog.records[0].getMessage()
    assert not logging.getLogger("somebody_else").filters


def test_no_process_wide_hook_is_installed():
    """Only the package's own loggers carry the filter; records of others are not touched."""
    factory = logging.getLogRecordFactory()
    assert getattr(factory, "__module__", "") != cs_log.__name__
    record = factory("somebody_else", logging.INFO, __file__, 1, "token %s", (JWS,), None)
    assert record.args == (JWS,)


def test_every_package_logger_is_guarded():
    """Each module takes its logger from log.get_logger: none is made unguarded."""
    root = Path(cs_log.__file__).parent
    made_otherwise = [
        f"{path.relative_to(root)}:{number}"
        for path in sorted(root.rglob("*.py"))
        if path.name != "log.py"
        for number, line in enumerate(path.read_text("utf-8").splitlines(), 1)
        if "getLogger(" in line
    ]
    assert made_otherwise == []
    import chat_security.middleware  # noqa: F401  (one module with a logger, at least)

    loggers = {
        name: module.logger
        for name, module in list(sys.modules.items())
        if cs_log.in_namespace(name) and isinstance(getattr(module, "logger", None), logging.Logger)
    }
    assert "chat_security.middleware" in loggers
    unguarded = [name for name, lg in loggers.items() if cs_log._filter not in lg.filters]
    assert unguarded == []


def test_get_logger_is_for_the_package_only():
    with pytest.raises(ValueError):
        cs_log.get_logger("somebody_else")


def test_install_is_idempotent():
    cs_log.install()
    cs_log.install()
    root = logging.getLogger("chat_security")
    assert sum(isinstance(f, cs_log.RedactingFilter) for f in root.filters) == 1


@pytest.mark.parametrize(
    "text, expected",
    [
        (f"t={JWS}", "t=[redacted token]"),
        (f"'private': ({SECRET}, [1]) tail", "'private': [redacted] tail"),
        (f"private='{SECRET}' tail", "private=[redacted] tail"),
        (f'"user_payload": "{SECRET}\\" x", next', '"user_payload": [redacted], next'),
        (f"private: {{unbalanced {SECRET}", "private: [redacted]"),
    ],
)
def test_scrub_text(text, expected):
    assert cs_log.scrub_text(text) == expected


# Shapes that made the old scrubber quadratic (a match tried from every position of
# a long base64url run) and the worst cases of each pattern and of the value scan.
LONG_LINES = {
    "letters": "a",
    "json-start": "eyJ",
    "short-segments": "a.",
    "segment-pairs": "aaaa.a.a ",
    "empty-segments": "aaaa.. ",
    "key-value": "private=",
    "openers": "{",
    "mixed": "eyJhbGci.a.b private={'x': \"",
    "token-and-words": JWS + " user_payload: ",
}
# A value that never ends: (what opens it, what repeats inside).
LONG_VALUES = {
    "open-value": ("private: ", "{"),
    "flat-pairs": ("private: {", "{}"),
    "nested-pairs": ("private: (", "{{}"),
    "quoted": ("user_payload: [", "'a'"),
    "escapes": ('private="', '\\"'),
}


def megabyte_line(unit: str) -> str:
    return (unit * ((1 << 20) // len(unit) + 1))[: 1 << 20]


@pytest.mark.parametrize("unit", list(LONG_LINES.values()), ids=list(LONG_LINES))
def test_scrubbing_is_linear(unit):
    """The one timing guard: a 1 MB line in well under a second (CPU time).

    A 16 KiB line first, so a quadratic regression fails in seconds instead of
    running for hours on the megabyte.
    """
    for size in (16 * 1024, 1 << 20):
        text = megabyte_line(unit)[:size]
        started = time.process_time()
        cs_log.scrub_text(text)
        assert time.process_time() - started < 1.0, f"{size} characters"


@pytest.mark.parametrize(("opener", "unit"), list(LONG_VALUES.values()), ids=list(LONG_VALUES))
def test_scrubbing_a_huge_value_is_bounded_and_redacts_the_rest(opener, unit):
    text = opener + megabyte_line(unit) + " " + SECRET
    started = time.process_time()
    scrubbed = cs_log.scrub_text(text)
    assert time.process_time() - started < 1.0
    assert SECRET not in scrubbed and scrubbed.endswith("[redacted]")
