"""LLM Quality Observer processors, registered with the collector through the
``lqo.processors`` entry point group: ``cost`` (prices from genai-prices)."""

from .version import __version__

__all__ = ["__version__"]
