"""praefect.settings: defaults, schema, loading and validation of the settings.

    from praefect.settings import load_config, SettingsError

    config = load_config("/etc/praefect/config.toml")
    config.virtual_storage("praefect").primary.grpc_target

See ``docs/configuration.md`` for every key.
"""

from .addresses import Address, AddressError, parse_address
from .errors import Problem, SettingsError
from .loader import DEFAULTS_FILE, EXAMPLES_DIR, load_config
from .model import (
    AuthConfig,
    Config,
    FailoverConfig,
    LoggingConfig,
    NodeConfig,
    NodeServeConfig,
    PluginsConfig,
    RedisConfig,
    ReplicationConfig,
    ServerConfig,
    TracingConfig,
    VirtualStorageConfig,
)
from .render import to_toml
from .schema import (
    ENV_PREFIX,
    RESERVED_ENVVARS,
    SECRETS_FILE_ENVVAR,
    SETTINGS_FILE_ENVVAR,
    mask_token,
)

__all__ = [
    "DEFAULTS_FILE",
    "ENV_PREFIX",
    "EXAMPLES_DIR",
    "RESERVED_ENVVARS",
    "SECRETS_FILE_ENVVAR",
    "SETTINGS_FILE_ENVVAR",
    "Address",
    "AddressError",
    "AuthConfig",
    "Config",
    "FailoverConfig",
    "LoggingConfig",
    "NodeConfig",
    "NodeServeConfig",
    "PluginsConfig",
    "Problem",
    "RedisConfig",
    "ReplicationConfig",
    "ServerConfig",
    "SettingsError",
    "TracingConfig",
    "VirtualStorageConfig",
    "load_config",
    "mask_token",
    "parse_address",
    "to_toml",
]
