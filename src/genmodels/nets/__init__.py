"""Network building blocks shared by the families: MLPs and conv encoder/decoder stacks."""

from genmodels.nets.conv import ConvDecoder, ConvEncoder, ResBlock
from genmodels.nets.linear import Linear, linear
from genmodels.nets.mlp import activation, mlp

__all__ = ["ConvDecoder", "ConvEncoder", "Linear", "ResBlock", "activation", "linear", "mlp"]
