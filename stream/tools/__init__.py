"""The command line's tools beside the worker: the live demo and the synthetic traffic generator."""
