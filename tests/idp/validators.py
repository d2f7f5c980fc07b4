"""The test provider's claims: the standard ones a site's IdP usually puts in an ID token.

DOT's documented hook (``get_additional_claims``); each claim goes out only
when its scope was granted (``profile``: ``name``, ``preferred_username``;
``email``: ``email``). ``sub`` is DOT's own: the user's primary key, as a string.
"""

from collections.abc import Callable
from typing import Any

from oauth2_provider.oauth2_validators import OAuth2Validator


class ClaimsValidator(OAuth2Validator):  # type: ignore[misc]
    def get_additional_claims(self) -> dict[str, Callable[[Any], str]]:
        return {
            "name": lambda request: request.user.get_full_name(),
            "preferred_username": lambda request: request.user.get_username(),
            "email": lambda request: request.user.email,
        }
