"""One error tree for everything a user can cause.

The CLI prints a ConveyorError as one line and exits with its `exit_code`;
anything else escaping is a bug and keeps its traceback.
"""


class ConveyorError(Exception):
    """A problem the user can fix; the message says what and how."""

    exit_code = 1


class UsageError(ConveyorError):
    """A command was called with arguments that cannot work."""

    exit_code = 2


class ConfigError(ConveyorError):
    """A settings file or variable is malformed."""

    exit_code = 2


class NotFoundError(ConveyorError):
    """A run, task or file named by the user does not exist."""

    exit_code = 2


class SpecError(ConveyorError):
    """A pipeline file has problems; each is one line `file:line: field: message`."""

    exit_code = 2

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class RunBusyError(ConveyorError):
    """Another live Conveyor process is already executing this run."""
