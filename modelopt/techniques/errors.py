"""Errors a technique raises when it cannot do, or did not do, what the suite asked."""


class TechniqueError(RuntimeError):
    """A technique ran but did not do what was asked (sparsity not reached, a slimmed model
    that computes something else, nothing quantized): the cell fails with this message instead
    of recording figures of a model that is not the one asked for."""


class DataUnavailable(RuntimeError):
    """Files a dataset needs are not on disk; the message says where to put them."""
