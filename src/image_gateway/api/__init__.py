"""The OpenAI-shaped HTTP surface: one module per surface."""
