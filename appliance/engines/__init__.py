"""Engines behind the small Protocols in ``base``: real local models and scripted fakes."""
