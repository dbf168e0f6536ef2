"""tinyres.optim: SGD, Adam, AdamW, RMSprop, Adagrad, Adadelta and learning-rate schedules
(torch.optim's names)."""
from tinyres.optim import lr_scheduler
from tinyres.optim.adadelta import Adadelta
from tinyres.optim.adagrad import Adagrad
from tinyres.optim.adam import Adam, AdamW
from tinyres.optim.optimizer import Optimizer
from tinyres.optim.rmsprop import RMSprop
from tinyres.optim.sgd import SGD

__all__ = ["Adadelta", "Adagrad", "Adam", "AdamW", "Optimizer", "RMSprop", "SGD",
           "lr_scheduler"]
