"""Model optimisation: a registered version converted to ONNX (or int8), checked, registered.

``convert`` turns scikit-learn, XGBoost and LightGBM artifacts into ONNX graphs that
serve the source's signature; ``check`` compares answers on reference rows; ``run``
ties them together with the registry. Needs the ``optimize`` extra.
"""

from inferline.optimize.run import Measurement, Report, optimize

__all__ = ["Measurement", "Report", "optimize"]
