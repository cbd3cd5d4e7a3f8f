"""User-facing errors: one line, exit code 2, never a traceback."""


class UserError(Exception):
    """A mistake in the user's input (config, path, value). The message is one line that names the
    file, field or value and says how to fix it; the CLI prints it and exits with code 2."""

    exit_code = 2
