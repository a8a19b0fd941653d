"""phi3-openvino: the OpenVINO backend of phi3.

Importing this package is cheap (no OpenVINO, optimum or torch import): phi3 loads
:mod:`phi3_openvino.plugin` to list backends, and the vendor libraries are imported only by the
modules that quantize (:mod:`phi3_openvino.export`) or run a model (:mod:`phi3_openvino.genai_engine`,
:mod:`phi3_openvino.optimum_engine`).
"""

from phi3_openvino._version import __version__

__all__ = ["__version__"]
