"""`conveyor server`: the REST API, the web UI, cron schedules and webhooks in one process."""
