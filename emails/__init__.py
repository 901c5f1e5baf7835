"""Framework-free mail: addresses, rendering, MIME messages and delivery.

Nothing here imports Flask or the database: functions take plain data and return
messages or delivery results, so the web app, the CLI and tests share them.
"""
