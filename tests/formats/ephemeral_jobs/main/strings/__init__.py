"""Namespace ``main.strings``."""
