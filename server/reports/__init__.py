"""Documents the server writes itself (PDF reports)."""
