"""ASGI entry point of the demo: Django for HTTP, Channels for the chat's WebSockets.

``manage.py runserver`` serves it (daphne is the first installed app), as
does any ASGI server: ``daphne demo_site.asgi:application``.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo_site.settings")
# Before anything that imports models: this sets Django up.
django_application = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402

from demo_site.chat.routing import websocket_application  # noqa: E402

application = ProtocolTypeRouter({"http": django_application, "websocket": websocket_application()})
