"""Built-in exporters, one module per format; each is a plugin of the ``mulm`` hook system."""
