"""Long-running pieces: daemon, per-device runner, hot-plug, control socket."""
