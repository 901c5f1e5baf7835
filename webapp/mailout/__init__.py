"""Mail-out: how any of our mail leaves, and how we know it again when it comes back.

The relay the configuration names, DKIM and the List-* headers (``relay``); the
transactional outbox queue, claimed, sent and recorded by any number of passes
(``outbox``: a relay's refusal is handed to whoever asked, the list); the VERP envelope
sender that names a message's reader (``verp``); each sender's name and whether it
lives (``senders``), and its journal of what the relay accepted (``journal``); the
outbox's and the deliveries' tables (``models``). Digests (``issues/``) and the
transactional mail (``subscribers/``) stand on it; it imports neither.
"""
