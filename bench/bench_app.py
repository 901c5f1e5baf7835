"""The app as gunicorn serves it, plus one bare endpoint: the ceiling of the same server."""

from webapp import create_app

app = create_app()


@app.post("/bench/bare")
def bare():
    """No form, no database: what Flask and gunicorn cost by themselves."""
    return {"ok": True}
