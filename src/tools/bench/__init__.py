"""`make bench`: what the template costs, measured side by side (see __main__.py)."""
