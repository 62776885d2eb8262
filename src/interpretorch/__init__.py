"""interpretorch: explain what deep networks see, correctly and fast."""
from interpretorch.attribution import (available_methods, bind, default_methods, explain, get_method, method_specs,
                                       register)
from interpretorch.capture import Site, capture, token_grid
from interpretorch.explanation import Explanation
from interpretorch.models import load_model
from interpretorch.run import RunResult, run

__version__ = "0.1.0"
__all__ = ["explain", "run", "RunResult", "bind", "register", "available_methods", "default_methods",
           "get_method", "method_specs", "capture", "Site", "token_grid", "Explanation", "load_model",
           "__version__"]
