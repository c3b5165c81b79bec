"""Serving: model folders behind an OpenAI-compatible gateway (built step by step)."""
