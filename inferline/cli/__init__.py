"""The ``inferline`` command: one module per noun."""
