"""Pipelines: DAGs of shell tasks with resources, run durably in dependency order."""
