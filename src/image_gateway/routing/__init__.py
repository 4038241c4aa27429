"""Logical model names → the provider calls that serve them."""
