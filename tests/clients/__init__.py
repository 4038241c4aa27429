"""Shared set-up of the client-conformance tests (tests/test_clients_*.py)."""
