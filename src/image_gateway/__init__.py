"""Image AIGC Gateway: one OpenAI-compatible endpoint in front of many image providers."""

__version__ = "0.1.0"
