"""Adapters: the I/O behind the ports (HTTP transport, clock, store)."""
