"""The list: subscribing, confirming, leaving and erasing; imports and exports;
transactional mail and the outbox that delivers it."""
