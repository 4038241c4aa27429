"""Prompt handling: aspect-ratio parsing, ``no-enhance`` removal and LLM prompt enhancement."""
