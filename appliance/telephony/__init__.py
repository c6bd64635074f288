"""Twilio wire formats and REST actions, kept apart from the call brain."""
