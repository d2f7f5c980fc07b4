"""An ASGI application for tests that run real ASGI servers (daphne) on one SQLite file.

``daphne tests.asgi_app:application`` with ``DJANGO_SETTINGS_MODULE=tests.process_settings``:
HTTP is the test project, ``ws/echo/`` an echo consumer behind the WebSocket middleware.
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.process_settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_application = get_asgi_application()

from channels.generic.websocket import AsyncJsonWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from chat_security.websocket import ChatSecurityWebSocketMiddleware  # noqa: E402


class Echo(AsyncJsonWebsocketConsumer):
    async def receive_json(self, content, **kwargs):
        await self.send_json({"type": "echo", "user": self.scope["chat_identity"].user_id})


application = ProtocolTypeRouter(
    {
        "http": django_application,
        "websocket": ChatSecurityWebSocketMiddleware(URLRouter([path("ws/echo/", Echo.as_asgi())])),
    }
)
