"""Score networks, a registry by `model.name`, and the wrapper that turns a network into `score_fn`."""

# Importing the modules registers the networks.
from scorejax.models import classifier, ddpm, mlp, ncsn, ncsn_small, ncsnpp, vdm  # noqa: F401
from scorejax.models.registry import get_model, get_model_class, model_names, register_model
from scorejax.models.utils import get_score_fn, init_params

__all__ = ["register_model", "get_model", "get_model_class", "model_names", "get_score_fn", "init_params"]
