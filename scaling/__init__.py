"""clipscale: plan, run and fit scaling laws of contrastive language-image training."""

from scaling.errors import ClipscaleError

__all__ = ["ClipscaleError"]
__version__ = "0.1.0"
