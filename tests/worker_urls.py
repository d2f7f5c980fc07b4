"""The test project's URLs plus ``/chat/api/worker``: which process verified the request."""

from __future__ import annotations

import os

from django.http import HttpRequest, JsonResponse
from django.urls import path

from demo_site.urls import urlpatterns as demo_urlpatterns


def worker(request: HttpRequest) -> JsonResponse:
    identity = request.chat_identity
    return JsonResponse({"pid": os.getpid(), "user_id": identity.user_id})


urlpatterns = [path("chat/api/worker", worker), *demo_urlpatterns]
