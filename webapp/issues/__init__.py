"""Issues of a newsletter: built from articles, then sent to every confirmed reader by
sender processes that claim, send and record (the sending core needs no Flask). Stands
on ``mailout/`` (relay, VERP, journals), ``subscribers/`` and ``reports/``."""
