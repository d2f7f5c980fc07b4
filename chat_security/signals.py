"""The package's own signals, for other apps to connect to.

Nothing here imports the rest of the package, so any module may send them
(the receivers that keep this package's caches honest are in receivers.py).
"""

from __future__ import annotations

from django.dispatch import Signal

#: Sent before a contact is deleted (GDPR); receivers delete what they tie to it.
#: Arguments: ``user_id`` (str), ``contact``; receivers return a description
#: of what they deleted (e.g. ``{"messages": 12}``).
contact_deleting = Signal()
