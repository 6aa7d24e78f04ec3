"""The command line: ``main`` parses arguments (map, validate, demo); ``operator`` holds the
commands an operator runs against a deployment (serve, deliver, poll, outbox)."""
