"""The HTTP/WebSocket front door. Depends on the core; the core never imports it."""
