"""Configuration: YAML files -> validated, frozen dataclasses (see docs/configuration.md).

`load_config(path)` is the entry point; the dataclasses live in `lbproxy.config.schema`.
"""

from lbproxy.config.durations import parse_address, parse_duration, parse_size
from lbproxy.config.errors import ConfigError
from lbproxy.config.load import load_config
from lbproxy.config.schema import Address, Config

__all__ = ["Address", "Config", "ConfigError", "load_config", "parse_address",
           "parse_duration", "parse_size"]
