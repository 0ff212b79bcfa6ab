"""lbproxy: an asyncio reverse-proxy load balancer."""

__version__ = "0.1.0"
