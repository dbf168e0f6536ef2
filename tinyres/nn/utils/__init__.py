"""tinyres.nn.utils: gradient clipping and parameter/vector conversion (torch.nn.utils)."""
from tinyres.nn.utils.clip_grad import (clip_grad_norm_, clip_grad_value_,
                                        clip_grads_with_norm_, get_total_norm)
from tinyres.nn.utils.convert_parameters import parameters_to_vector, vector_to_parameters

__all__ = ["clip_grad_norm_", "clip_grad_value_", "clip_grads_with_norm_", "get_total_norm",
           "parameters_to_vector", "vector_to_parameters"]
from tinyres.nn.utils import fusion
from tinyres.nn.utils.fusion import (fold_batchnorm, fuse_conv_bn_eval, fuse_conv_bn_weights,
                                     fuse_linear_bn_eval, fuse_linear_bn_weights)

__all__ += ["fold_batchnorm", "fuse_conv_bn_eval", "fuse_conv_bn_weights",
            "fuse_linear_bn_eval", "fuse_linear_bn_weights", "fusion"]
