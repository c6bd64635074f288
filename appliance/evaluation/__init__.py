"""Answer quality on businesses the prompts were not tuned on (``appliance eval``)."""
