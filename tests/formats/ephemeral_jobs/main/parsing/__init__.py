"""Namespace ``main.parsing``."""
