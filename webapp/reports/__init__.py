"""How issues did and how lists grow: clicks counted with care (their tables are here),
per-issue results, refusals by receiving domain, and the report staff read. Stands on
the shared models and ``mailout/``'s deliveries; ``issues/`` attaches its
``digest report``."""
