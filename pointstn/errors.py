"""The one exception type that means "the user gave us something we cannot use".

The command line turns a `PointstnError` into a single line on stderr and exit code 2; anything
else is a bug and keeps its traceback.
"""


class PointstnError(Exception):
    """A user-facing error: bad input, bad config, missing file, missing optional dependency."""


class MissingDependencyError(PointstnError):
    """An optional dependency is needed for this feature but is not installed."""

    def __init__(self, package: str, feature: str, install: str):
        super().__init__(f"{feature} needs '{package}', which is not installed; install it with: {install}")
        self.package = package
