"""``appliance bench``: voice-to-voice latency and load, measured the way callers feel it.

``runner`` starts a server and drives levels of concurrent simulated callers; ``stats`` turns
timings into percentiles; ``report`` prints, saves and plots; ``utterances`` is the fixed,
cached set of caller lines; ``probes`` reads CPU, memory and GPU use from outside the server.
"""

from appliance.bench.runner import BenchError, BenchOptions, run_bench

__all__ = ["BenchError", "BenchOptions", "run_bench"]
