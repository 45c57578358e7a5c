"""Optimizer classes: hyper-parameters, state, float64 scalars, kernel calls."""
from ._adagrad import Adagrad
from ._adam import Adam
from ._base import MemoryUsage, Optimizer
from ._factory import OPTIMIZERS, make_optimizer
from ._ftrl import Ftrl
from ._grad import RowGrad
from ._rmsprop import RMSprop
from ._sgd import SGD

__all__ = ["Adam", "Adagrad", "Ftrl", "RMSprop", "SGD", "RowGrad", "Optimizer", "MemoryUsage",
           "OPTIMIZERS", "make_optimizer"]
