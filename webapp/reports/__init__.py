"""How issues did and how lists grow: clicks counted with care, per-issue results, and
the report staff read."""
