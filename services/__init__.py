"""Runnable services built on logbus: each a worker, its queue and its sinks, from one TOML file."""
