"""Live scoring: a call scored while it happens, over a WebSocket or the Python API."""
