"""User-facing errors: their message names the thing that is wrong and how to fix it.

The entry point prints these without a traceback.
"""


class FerLotteryError(Exception):
    """A problem with the user's input (data, config, weights) rather than a bug."""


class ConfigError(FerLotteryError):
    """A config value is out of range."""


class DataError(FerLotteryError):
    """The dataset is missing or not in the expected layout."""


class WeightsError(FerLotteryError):
    """Model weights cannot be downloaded or loaded."""


class CacheError(FerLotteryError):
    """A cache entry cannot be published or loaded, or its lock cannot be had."""
