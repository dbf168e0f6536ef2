"""Embedding: a table of vectors looked up by integer index, with torch.nn's arguments,
initialisation (N(0, 1), the padding row zero), parameter name and repr."""
from tinyres.functional.shape import as_int
from tinyres.nn import functional as F
from tinyres.nn import init
from tinyres.nn.layers import _empty_parameter, check_input
from tinyres.nn.module import Module, Parameter


class Embedding(Module):
    """A table of num_embeddings vectors of embedding_dim, looked up by integer index;
    weight drawn from N(0, 1), the padding_idx row zero and never updated."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, max_norm=None,
                 norm_type=2.0, scale_grad_by_freq=False, sparse=False, _weight=None,
                 _freeze=False, device=None, dtype=None):
        super().__init__()
        self.num_embeddings = as_int(num_embeddings, "num_embeddings", "Embedding")
        self.embedding_dim = as_int(embedding_dim, "embedding_dim", "Embedding")
        if padding_idx is not None:
            if not -self.num_embeddings <= padding_idx < self.num_embeddings:
                raise AssertionError("Embedding: Padding_idx must be within num_embeddings")
            padding_idx %= self.num_embeddings
        self.padding_idx, self.max_norm, self.norm_type = padding_idx, max_norm, norm_type
        self.scale_grad_by_freq, self.sparse = scale_grad_by_freq, sparse
        shape = (self.num_embeddings, self.embedding_dim)
        if _weight is None:
            self.weight = _empty_parameter(shape, device, dtype)
            self.reset_parameters()
        else:
            if tuple(_weight.shape) != shape:
                raise AssertionError(f"Embedding: Shape of weight {tuple(_weight.shape)} does "
                                     f"not match num_embeddings and embedding_dim {shape}")
            self.weight = Parameter(_weight)
        self.weight.requires_grad = not _freeze

    def reset_parameters(self):
        init.normal_(self.weight)
        if self.padding_idx is not None:
            self.weight.array[self.padding_idx] = 0

    @classmethod
    def from_pretrained(cls, embeddings, freeze=True, padding_idx=None, max_norm=None,
                        norm_type=2.0, scale_grad_by_freq=False, sparse=False):
        """An Embedding holding the given (num_embeddings, dim) weights."""
        rows, cols = embeddings.shape
        return cls(rows, cols, padding_idx, max_norm, norm_type, scale_grad_by_freq, sparse,
                   _weight=embeddings, _freeze=freeze)

    def forward(self, input):
        return F.embedding(check_input(self, input), self.weight, self.padding_idx,
                           self.max_norm, self.norm_type, self.scale_grad_by_freq, self.sparse)

    def extra_repr(self):
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx}"
        if self.max_norm is not None:
            s += f", max_norm={self.max_norm}"
        return s
