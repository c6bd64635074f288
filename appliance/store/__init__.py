"""The call log: every call, turn, transcript, event and latency figure, in SQLite."""
