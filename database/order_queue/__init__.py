"""The order queue's storage; ``database/order_queue_db.py`` is its public face."""
