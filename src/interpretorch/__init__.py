"""interpretorch: explain what deep networks see, correctly and fast."""
from interpretorch.attribution import available_methods, explain
from interpretorch.capture import capture
from interpretorch.explanation import Explanation
from interpretorch.models import load_model

__version__ = "0.1.0"
__all__ = ["explain", "available_methods", "capture", "Explanation", "load_model", "__version__"]
