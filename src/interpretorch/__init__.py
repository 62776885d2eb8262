"""interpretorch: explain what deep networks see, correctly and fast.

Importing the package registers the built-in methods (attribution's, then the transformers family's: the
registry's order) and installs the report floor's drawing of explanations.
"""
from interpretorch.attribution import (available_methods, bind, default_methods, explain, get_method, method_specs,
                                       register)
from interpretorch.capture import Site, capture, token_grid
from interpretorch.explanation import Explanation
from interpretorch.models import load_model
from interpretorch.report import grid  # importing the report floor installs Explanation's drawing
from interpretorch.run import RunResult, run
from interpretorch import transformers  # noqa: F401, I001 - registers the transformer methods after attribution's

__version__ = "0.1.0"
__all__ = ["explain", "run", "RunResult", "bind", "register", "available_methods", "default_methods",
           "get_method", "method_specs", "capture", "Site", "token_grid", "Explanation", "grid", "load_model",
           "__version__"]
