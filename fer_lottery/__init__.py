"""fer_lottery: pruning and lottery-ticket experiments on facial-expression recognition."""

__version__ = "0.1.0"
