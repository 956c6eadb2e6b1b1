"""The one exception type for mistakes a user can make (bad file, unknown class, ...).

The CLI turns it into a single line on stderr and exit code 2; its message always
says what is wrong and what to do about it.
"""


class AttngradError(ValueError):
    """A user-fixable problem: the message says what is wrong and what to do."""
