"""The package's own signals, for other apps to connect to.

Nothing here imports the rest of the package, so any module may send them
(the receivers that keep this package's caches honest are in receivers.py).
"""

from __future__ import annotations

from django.dispatch import Signal

#: Sent before a contact is deleted (GDPR); receivers delete what they tie to it.
#: Arguments: ``user_id`` (str), ``contact``; receivers return a description
#: of what they deleted (e.g. ``{"messages": 12}``). Deleting a verified user's
#: contact sends it for each anonymous id linked to that user too: ``user_id``
#: is then the anonymous cookie id and ``contact`` its anonymous contact, or an
#: unsaved stand-in (``pk`` None, ``anonymous`` True) when that was merged away.
contact_deleting = Signal()

#: Sent when an anonymous visitor's id is linked to a verified user
#: (``link_anonymous``, SPEC §11), inside its transaction, before the anonymous
#: contact is deleted; receivers move their own data keyed by the anonymous id
#: to the user. Arguments: ``anonymous_id`` (the cookie id), ``user_id`` (the
#: ``sub``), ``contact`` (the user's contact, already merged). Sent again on a
#: repeated link, so receivers must only move what is still there.
anonymous_linked = Signal()
