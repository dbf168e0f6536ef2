"""tinyres.utils.data: datasets, samplers, collation and the DataLoader, as torch.utils.data.

    import tinyres as torch
    from torch.utils.data import DataLoader, TensorDataset
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, num_workers=2)
"""
from tinyres.utils.data.collate import default_collate, default_convert
from tinyres.utils.data.dataloader import DataLoader
from tinyres.utils.data.dataset import (ChainDataset, ConcatDataset, Dataset, IterableDataset,
                                        Subset, TensorDataset, random_split)
from tinyres.utils.data.sampler import (BatchSampler, RandomSampler, Sampler,
                                        SequentialSampler, SubsetRandomSampler,
                                        WeightedRandomSampler)
from tinyres.utils.data.worker import WorkerInfo, get_worker_info
from tinyres.utils.data import distributed
from tinyres.utils.data.distributed import DistributedSampler

__all__ = ["BatchSampler", "ChainDataset", "ConcatDataset", "DataLoader", "Dataset",
           "IterableDataset", "RandomSampler", "Sampler", "SequentialSampler", "Subset",
           "SubsetRandomSampler", "TensorDataset", "WeightedRandomSampler", "WorkerInfo",
           "default_collate", "default_convert", "get_worker_info", "random_split"]
__all__ += ["DistributedSampler", "distributed"]
