"""Signed-JWT identity verification for embedded web chats.

The names in ``__all__`` are the package's stable Python API; every other
module is internal except the dotted paths settings, URLconfs and templates
name (``chat_security.middleware.ChatSecurityMiddleware``,
``chat_security.views``, the ``chat_security`` and ``chat_security_agent``
template tag libraries) and the models in ``chat_security.models``.

The names are loaded on first access (PEP 562), so ``import chat_security``
loads no models and needs no configured settings: a settings module or an
``AppConfig`` may import it. Using a name loads its module, which needs the
app registry ready like any model code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module (in this package) that defines it
_EXPORTS: dict[str, str] = {
    "DEFAULT_INTEGRATION": "integrations",
    "DEFAULT_USER_SPACE": "integrations",
    "ERROR_CODES": "exceptions",
    "AnonymousLinkError": "exceptions",
    "ChatIdentity": "identity_types",
    "ChatSecurityError": "exceptions",
    "KeyImportError": "exceptions",
    "KeyStateError": "exceptions",
    "KeyStoreUnavailable": "exceptions",
    "TokenError": "exceptions",
    "VerifiedToken": "verified",
    "anonymous_id_of": "marks",
    "anonymous_linked": "signals",
    "contact_deleting": "signals",
    "contact_for": "identity",
    "delete_contact": "identity",
    "end_chat_session": "session",
    "find_contact": "identity",
    "forget_anonymous_id": "marks",
    "issue": "tokens",
    "link_anonymous": "continuity",
    "security_enabled": "keyring",
    "verify": "tokens",
}

__all__ = [
    "DEFAULT_INTEGRATION",
    "DEFAULT_USER_SPACE",
    "ERROR_CODES",
    "AnonymousLinkError",
    "ChatIdentity",
    "ChatSecurityError",
    "KeyImportError",
    "KeyStateError",
    "KeyStoreUnavailable",
    "TokenError",
    "VerifiedToken",
    "anonymous_id_of",
    "anonymous_linked",
    "contact_deleting",
    "contact_for",
    "delete_contact",
    "end_chat_session",
    "find_contact",
    "forget_anonymous_id",
    "issue",
    "link_anonymous",
    "security_enabled",
    "verify",
]

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ loads them
    from .continuity import link_anonymous
    from .exceptions import (
        ERROR_CODES,
        AnonymousLinkError,
        ChatSecurityError,
        KeyImportError,
        KeyStateError,
        KeyStoreUnavailable,
        TokenError,
    )
    from .identity import contact_for, delete_contact, find_contact
    from .identity_types import ChatIdentity
    from .integrations import DEFAULT_INTEGRATION, DEFAULT_USER_SPACE
    from .keyring import security_enabled
    from .marks import anonymous_id_of, forget_anonymous_id
    from .session import end_chat_session
    from .signals import anonymous_linked, contact_deleting
    from .tokens import issue, verify
    from .verified import VerifiedToken


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        # AttributeError, not ImportError: ``from chat_security import keyring``
        # relies on it to fall back to importing the submodule.
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
