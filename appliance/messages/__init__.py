"""Take a message: the conversation that collects it, its record, and its delivery."""
