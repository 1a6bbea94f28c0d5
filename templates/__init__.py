"""Built-in Jinja2 templates, one folder per export format."""
