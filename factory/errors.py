"""Errors the CLI turns into a clear message instead of a traceback."""


class FactoryError(Exception):
    """Base class: the message is meant for the user as it is."""


class ConfigError(FactoryError):
    """A pipeline file or --set override is wrong; raised before any Ray work starts."""


class MissingDependency(FactoryError):
    """An optional dependency (the engine, a GPU) is absent; the message names the extra to install."""


class InputError(FactoryError):
    """An input path or dataset cannot be read at all (a bad row is set aside instead)."""
