"""Errors that are the user's to fix: the CLI prints them as one line, no traceback."""


class CheckoutCamError(Exception):
    """A problem with input, files or setup, worded for the person who can fix it.

    ``exit_code`` follows the CLI convention: 2 for usage/setup problems
    (missing model, bad config), 1 for a run that partly failed.
    """

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


class ConfigError(CheckoutCamError):
    """One or more config settings are invalid; ``errors`` lists them by key path."""

    def __init__(self, errors: list[str], source: str = "config"):
        self.errors = list(errors)
        super().__init__(f"{source}: " + "; ".join(self.errors), exit_code=2)


class ModelFileError(CheckoutCamError):
    """A model artifact is missing, corrupt, foreign or lacks metadata."""


class WeightsError(CheckoutCamError):
    """Weights could not be found or do not fit the ResNet-18 layout."""


class ImageReadError(CheckoutCamError):
    """One image could not be read; classify reports it and goes on."""

    def __init__(self, message: str):
        super().__init__(message, exit_code=1)
