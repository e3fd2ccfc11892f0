"""Errors a technique raises when it cannot do, or did not do, what the suite asked."""


class TechniqueError(RuntimeError):
    """A technique ran but did not do what was asked (sparsity not reached, a slimmed model
    that computes something else, nothing quantized): the cell fails with this message instead
    of recording figures of a model that is not the one asked for."""


class DataUnavailable(RuntimeError):
    """Files a dataset needs are not on disk; the message says where to put them."""


def first_line(exc: BaseException) -> str:
    """`Type: the message's first line`: a library's reason, short enough for a record."""
    text = str(exc)
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
