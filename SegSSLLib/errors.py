"""The one exception type that reaches users as a one-line message."""


class SegSSLError(Exception):
    """A problem with the user's input or environment.

    The message is one line that names the problem and the fix. The CLI prints it without a
    traceback and exits non-zero; the Slicer module shows it in a message box.
    """

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class OperationCancelled(Exception):
    """The operation was cancelled (its ``cancel`` event was set); what it works on is as it was before it."""
