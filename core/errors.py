"""The one exception type users see: its message is a single line that says what to fix."""


class PurifyLabError(ValueError):
    """Bad input or a bad parameter; the message names the value and what is allowed."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
