"""The one exception type that reaches users as a single line."""


class ClipscaleError(Exception):
    """Bad input or an unusable environment; the CLI prints it as one line and exits 2."""
