"""The order queue's services; ``services/order_queue_service.py`` (``queue_order``) is
their public face."""
