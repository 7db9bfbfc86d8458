"""Network building blocks shared by the families: MLPs and conv encoder/decoder stacks."""

from genmodels.nets.conv import ConvDecoder, ConvEncoder, ResBlock
from genmodels.nets.mlp import activation, mlp

__all__ = ["ConvDecoder", "ConvEncoder", "ResBlock", "activation", "mlp"]
