"""The same small JSON answer from a plain Django view and from DRF views."""

from bench_common import whoami  # noqa: F401 (served at /chat/api/whoami)
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.authentication import (
    JWTAuthentication,
    JWTStatelessUserAuthentication,
)


class StatelessWhoAmI(APIView):
    """simplejwt without a database: the user is a ``TokenUser`` built from the claims."""

    authentication_classes = [JWTStatelessUserAuthentication]
    permission_classes = [IsAuthenticated]

    def get(self, request: Request) -> Response:
        return Response(
            {
                "user_id": str(request.user.id),
                "verified": True,
                "status": "ok",
                "unread": 3,
                "server": "bench",
            }
        )


class DbUserWhoAmI(StatelessWhoAmI):
    """simplejwt's default: the token's ``user_id`` is loaded from the database."""

    authentication_classes = [JWTAuthentication]
