"""Engines behind quantserve. Nothing here imports ``server``."""
