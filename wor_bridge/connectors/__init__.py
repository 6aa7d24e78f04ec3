"""Connectors: one pure module per kind of counterparty (render requests, interpret answers)."""
