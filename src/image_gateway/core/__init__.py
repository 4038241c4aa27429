"""Shared ground beneath every layer: the request/result vocabulary and the settings values."""
