"""The list: subscribing, confirming, leaving; imports and exports; the transactional
mail it queues (delivered by ``mailout/``'s outbox, whose refusals ``suppression``
hears); the hashes of erased addresses (the erasure itself is ``privacy/``)."""
