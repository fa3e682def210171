"""Which training examples made this prediction: gradients of the data rather than of the input.

``per_example_grads`` (one gradient per example, ``torch.func``) is the start of every method here.
"""

from labkit.influence.per_example import per_example_grads

__all__ = ["per_example_grads"]
