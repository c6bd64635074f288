"""Where model weights come from: shipped default packages, fetched presets, or explicit paths."""
