"""Shared Flask extensions, at the same import path as OpenAlgo's ``extensions``.

The plugin emits order-queue events through this ``socketio`` object; in OpenAlgo
the object of the same name is used, so plugin code does not change between hosts.
"""

from flask_socketio import SocketIO

# threading mode: the host runs the Werkzeug server (dev) or a threaded WSGI server;
# OpenAlgo pins async_mode="threading" for the same reason.
socketio = SocketIO(async_mode="threading", logger=False, engineio_logger=False)
