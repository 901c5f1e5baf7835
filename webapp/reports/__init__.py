"""How issues did and how lists grow: clicks counted with care, per-issue results,
refusals by receiving domain, and the report staff read. Stands on the models only;
``issues/`` attaches its ``digest report``."""
