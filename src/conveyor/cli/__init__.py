"""The `conveyor` command line: typer commands, rich output, one module per command group."""
