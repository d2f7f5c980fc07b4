"""WSGI entry point for gunicorn (``served.wsgi:application``)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "served.settings")
application = get_wsgi_application()
