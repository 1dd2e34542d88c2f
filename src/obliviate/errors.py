"""The one exception type users see for bad input."""


class ObliviateError(ValueError):
    """Bad input from a user: the message names the offending value and what to do instead.

    The CLI turns it into a one-line ``error: ...`` message and exit code 2.
    """
