"""The list: subscribing, confirming, leaving and erasing; imports and exports;
transactional mail and the outbox queue that delivers it (through ``mailout/``; the
web server's thread that drains it is in ``worker.py``)."""
