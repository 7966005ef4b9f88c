"""WSGI entry point for servers that import the app: ``gunicorn wsgi:app`` and the like.

Starts the dispatcher and scheduler once, on import; SIGTERM / SIGINT stop the
dispatcher gracefully and then reach the server's own handlers.
"""

from app import create_app, start_background_services

app = create_app()
start_background_services(app)
