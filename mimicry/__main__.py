"""``python -m mimicry``: the command line."""

from mimicry.faces.cli import app

app(prog_name="mimicry")
