"""Pictures: image grids, interpolation sheets, latent maps and loss curves.

Grids use Pillow only; plots import matplotlib lazily (Agg backend) so the core stays light.
"""

from genmodels.viz.figures import (
    interpolation_sheet,
    latent_scatter,
    manifold_sheet,
    reconstruction_sheet,
    slerp,
)
from genmodels.viz.grid import make_grid, save_grid, to_uint8
from genmodels.viz.plots import plot_latent_scatter, plot_losses

__all__ = [
    "interpolation_sheet",
    "latent_scatter",
    "make_grid",
    "manifold_sheet",
    "plot_latent_scatter",
    "plot_losses",
    "reconstruction_sheet",
    "save_grid",
    "slerp",
    "to_uint8",
]
