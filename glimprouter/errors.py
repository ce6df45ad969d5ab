"""Errors GlimpRouter shows to its users: one line each, naming the setting to change."""


class GlimpRouterError(Exception):
    """Base class: the message is one line a user can act on."""


class ConfigError(GlimpRouterError):
    """A setting, flag or input has a value GlimpRouter cannot use."""


class EndpointError(GlimpRouterError):
    """A model server is unreachable, misconfigured, or answers in a way the method cannot use."""
