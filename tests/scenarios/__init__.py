"""End to end: real app processes, real servers (dev and gunicorn + eventlet), SIGKILL, a
real browser, both stores."""
