"""The command-line tools behind ``tools/*.py`` (also ``python -m softteacher.tools.<name>``)."""
