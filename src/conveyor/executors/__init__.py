"""Executors start a task's processes somewhere and report how they ended."""
