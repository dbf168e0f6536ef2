"""tinyres.optim: SGD, Adam, AdamW and learning-rate schedules (torch.optim's names)."""
from tinyres.optim import lr_scheduler
from tinyres.optim.adam import Adam, AdamW
from tinyres.optim.optimizer import Optimizer
from tinyres.optim.sgd import SGD

__all__ = ["Adam", "AdamW", "Optimizer", "SGD", "lr_scheduler"]
