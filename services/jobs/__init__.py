"""The jobs service: submits media tasks to their providers and follows them to the end."""
