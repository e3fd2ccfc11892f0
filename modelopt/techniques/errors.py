"""Errors a technique raises when it cannot do, or did not do, what the suite asked."""

from pathlib import Path


class TechniqueError(RuntimeError):
    """A technique ran but did not do what was asked (sparsity not reached, a slimmed model
    that computes something else, nothing quantized): the cell fails with this message instead
    of recording figures of a model that is not the one asked for."""


class DataUnavailable(RuntimeError):
    """Files a dataset needs are not on disk; the message says where to put them."""


def first_line(exc: BaseException) -> str:
    """`Type: the message's first line`: a library's reason, short enough for a record; a
    bare `assert` of the library's says where it failed instead."""
    text = str(exc).strip()
    if text:
        return f"{type(exc).__name__}: {text.splitlines()[0]}"
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = f" in {tb.tb_frame.f_code.co_name} ({Path(tb.tb_frame.f_code.co_filename).name}" \
            f":{tb.tb_lineno})" if tb is not None else ""
    return f"{type(exc).__name__}{where}"
