"""Mail-out: how any of our mail leaves, and how we know it again when it comes back.

The relay the configuration names, DKIM and the List-* headers (``relay``); the VERP
envelope sender that names a message's reader (``verp``); each sender's name and
whether it lives (``senders``), and its journal of what the relay accepted
(``journal``). Digests (``issues/``) and the transactional outbox (``subscribers/``)
stand on it; it imports neither.
"""
