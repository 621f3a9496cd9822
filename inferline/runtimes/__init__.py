"""How a model is loaded and called: one module per format, registered by entry point."""

from inferline.runtimes.base import Inputs, Model, Outputs

__all__ = ["Inputs", "Model", "Outputs"]
