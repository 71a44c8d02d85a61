"""The bench's one error: a measurement that could not be completed."""


class BenchError(RuntimeError):
    """A measurement could not be completed."""
