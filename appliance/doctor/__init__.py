"""``appliance doctor``: prove each engine of the active preset runs on this machine.

Each check runs in its own child process, so a model or library that crashes the interpreter
(SIGILL from a CPU-specific build, SIGSEGV from a corrupt file) is reported as a failed check
naming the engine, never as a dead caller or server.
"""
