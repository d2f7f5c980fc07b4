"""Set up the test identity provider's database (run as ``python -m tests.idp.bootstrap``).

Runs in a process of its own on ``tests.idp.settings``. Reads a JSON object
from stdin::

    {"users": {"alice": "password", ...},
     "client": {"client_id": ..., "client_secret": ..., "redirect_uri": ...}}

migrates, creates the users (``alice`` gets the email ``alice@example.com``
and the name "Alice Example") and one confidential client (authorization-code
grant, RS256 ID tokens, no consent screen), and prints
``{"subjects": {"alice": "<sub>", ...}}``: each user's ``sub`` at the provider.
"""

import json
import sys

import django


def main() -> None:
    spec = json.load(sys.stdin)
    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from oauth2_provider.models import get_application_model

    call_command("migrate", verbosity=0, interactive=False)
    user_model = get_user_model()
    subjects = {}
    for username, password in spec["users"].items():
        user = user_model.objects.create_user(
            username=username,
            password=password,
            email=f"{username}@example.com",
            first_name=username.capitalize(),
            last_name="Example",
        )
        subjects[username] = str(user.pk)
    application = get_application_model()
    client = spec["client"]
    application.objects.create(
        name="chat site",
        client_id=client["client_id"],
        client_secret=client["client_secret"],  # stored hashed
        client_type=application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=application.GRANT_AUTHORIZATION_CODE,
        redirect_uris=client["redirect_uri"],
        algorithm=application.RS256_ALGORITHM,
        skip_authorization=True,
    )
    json.dump({"subjects": subjects}, sys.stdout)


if __name__ == "__main__":
    main()
