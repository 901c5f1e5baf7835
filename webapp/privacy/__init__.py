"""A reader's own data across every feature: what "download my data" gives them, and
erasure (by the reader's own button or ``newsletter subscribers delete``).

It stands on every feature whose tables hold an address, so none of them imports it.
"""
