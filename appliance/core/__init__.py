"""The call brain: audio, turn taking and the per-call session; no web framework, no vendor SDK."""
