"""OpenAI wire shapes, validated with msgspec (compiled, one pass)."""
