"""``appliance bench``: voice-to-voice latency and load, measured the way callers feel it.

``runner`` starts a server and drives levels of concurrent simulated callers; ``stats`` turns
timings into percentiles; ``report`` prints, saves and plots; ``utterances`` is the fixed,
cached set of caller lines; ``probes`` reads CPU, memory and GPU use from outside the server.
``cluster`` (``--cluster N``) runs the same calls on N boxes sharing a model server, Chroma,
PostgreSQL and Redis, then on one in-process box; ``services`` starts and namespaces those
shared servers; ``llm_hop`` times the model server's hop alone.
"""

from appliance.bench.runner import BenchError, BenchOptions, run_bench

__all__ = ["BenchError", "BenchOptions", "run_bench"]
