"""The CloudWindow application: REST API and composition root (``server.app.create_app``)."""
