"""modelopt: benchmark what each model-optimization technique buys and costs."""

__version__ = "0.1.0"
