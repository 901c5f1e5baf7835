"""The app as gunicorn serves it, plus one bare endpoint: the ceiling of the same server."""

from flask import redirect

from webapp import create_app

app = create_app()


@app.post("/bench/bare")
def bare():
    """No form, no database: what Flask and gunicorn cost by themselves."""
    return {"ok": True}


@app.get("/bench/bare-redirect")
def bare_redirect():
    """A 302 with no token and no database: the ceiling for a tracked click."""
    return redirect("http://127.0.0.1:5000/newsletters/explaining-ukraine/issues/1", 302)
