"""lbproxy: an asyncio reverse-proxy load balancer."""

from lbproxy import compiled

__version__ = "0.1.0"

compiled.install()        # before any other lbproxy module is imported


def __getattr__(name: str) -> object:
    """`lbproxy.accelerated`: whether the request path runs compiled (lbproxy/compiled.py)."""
    if name == "accelerated":
        return compiled.accelerated()
    raise AttributeError(f"module 'lbproxy' has no attribute {name!r}")
