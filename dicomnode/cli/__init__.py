"""The admin CLI (`dicomnode ...`): thin typer commands over the services."""
