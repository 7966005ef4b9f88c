"""The order queue's services; ``services/order_queue_service.py`` (``queue_order``) is
their public face."""

#: The plugin's version: shown by health, the admin page and the installer's ``--check``;
#: what changed in each is in CHANGELOG.md.
VERSION = "1.5.0"
