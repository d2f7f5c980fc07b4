"""The one JSON endpoint, three ways: plain Django view (guarded or not by the stack's
middleware) and two DRF views authenticated by simplejwt."""

from django.urls import path

from served import views

urlpatterns = [
    path("chat/api/whoami", views.whoami),
    path("drf/stateless", views.StatelessWhoAmI.as_view()),
    path("drf/db-user", views.DbUserWhoAmI.as_view()),
]
