"""User-facing errors: raised for bad configs, data files and tool definitions.

The entry point catches ``ToolMasterError`` and prints its message as one line with a non-zero exit,
so messages must name the offending key, file or value and what would be accepted instead.
"""


class ToolMasterError(Exception):
    """A problem the user can fix (config, data file, tool definition); printed as one line."""


class ConfigError(ToolMasterError):
    """A config value is missing, unknown or out of range."""


class DataError(ToolMasterError):
    """A data file (tasks, trajectories) is malformed."""
