"""hrnet-edge-runtime: run exported hrnet-edge artifacts without PyTorch.

Numpy in and out, driven only by each artifact's ``metadata.json``. Imports neither
torch nor the hrnet-edge training package (a test proves it).
"""
__version__ = "0.1.0"

# The entry points, for ``from hrnet_edge_runtime import open_adapter``; none of these
# imports a runtime (they load when an artifact is opened).
from hrnet_edge_runtime.errors import ArtifactError, RuntimeErrorBase, RuntimeUnavailable, UsageError  # noqa: E402
from hrnet_edge_runtime.metadata import Artifact, load_artifact, verify_sha256  # noqa: E402
from hrnet_edge_runtime.adapters import open_adapter  # noqa: E402
from hrnet_edge_runtime.inputs import image_to_input, random_input  # noqa: E402

__all__ = ["Artifact", "ArtifactError", "RuntimeErrorBase", "RuntimeUnavailable", "UsageError", "__version__",
           "image_to_input", "load_artifact", "open_adapter", "random_input", "verify_sha256"]
