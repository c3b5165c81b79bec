"""Conveyor: adapt language models to a domain and put them into service."""

__version__ = "0.1.0"
