"""The edit job's TOML configuration: schema, loading/validation, and entry-point helpers."""

from config.errors import ConfigError, UserError
from config.loader import load_config, render_toml, require, save_config, to_dict
from config.schema import Config

__all__ = ["Config", "ConfigError", "UserError", "load_config", "render_toml", "require", "save_config", "to_dict"]
