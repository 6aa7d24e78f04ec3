"""Use cases: what the bridge does, each over the ports (store, transport, clock); no I/O itself.

``intake`` (accept a pushed referral), ``delivery`` (send what is due), ``way_back`` (the way back:
apply welfare-side updates and feedback), ``task_view`` (read a Task), ``deadline_alerts``
(first-contact deadlines), ``polling`` (ask welfare FHIR servers what changed); ``caller`` is who
asks.
"""
