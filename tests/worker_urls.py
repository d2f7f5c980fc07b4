"""The test project's URLs plus ``/chat/api/worker``: which process verified the request;
and ``/a/api/tenant``: which integration accepted it (guarded once one serves ``/a/api/``)."""

from __future__ import annotations

import os

from django.http import HttpRequest, JsonResponse
from django.urls import path

from demo_site.urls import urlpatterns as demo_urlpatterns


def worker(request: HttpRequest) -> JsonResponse:
    identity = request.chat_identity
    return JsonResponse({"pid": os.getpid(), "user_id": identity.user_id})


def tenant(request: HttpRequest) -> JsonResponse:
    identity = getattr(request, "chat_identity", None)  # None: no integration guards the path
    return JsonResponse(
        {
            "integration": getattr(identity, "integration", None),
            "user_id": getattr(identity, "user_id", None),
        }
    )


urlpatterns = [
    path("chat/api/worker", worker),
    path("a/api/tenant", tenant),
    *demo_urlpatterns,
]
