"""Webhooks: signed, retried and durable delivery of events to other systems."""
