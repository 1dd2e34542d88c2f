"""obliviate: control what a neural network remembers and what it forgets, and prove both.

The top-level package imports nothing heavy; import the sub-packages you use
(``obliviate.data``, ``obliviate.continual``, ``obliviate.unlearning``, ...).
"""

__version__ = "0.1.0"

from obliviate.errors import ObliviateError

__all__ = ["ObliviateError", "__version__"]
