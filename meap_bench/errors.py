"""User-facing errors: one line, never a traceback; exit code 2 for user mistakes, 1 for the environment."""


class UserError(Exception):
    """A mistake in the user's input (config, path, value). The message is one line that names the
    file, field or value and says how to fix it; the CLI prints it and exits with code 2."""

    exit_code = 2


class EnvironmentFault(Exception):
    """The machine, not the input, stopped the run: a full disk, a read-only folder, a run directory in
    use by another process. One line, exit code 1; the run can go on once the cause is gone."""

    exit_code = 1
