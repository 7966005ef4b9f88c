"""Applying the durable order queue plugin to an OpenAlgo checkout."""
