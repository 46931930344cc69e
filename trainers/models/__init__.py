"""Model zoo: every model takes [0, 1] images and exposes forward_features / forward_head."""
from trainers.models import darht_student, mlp, mobilenetv2, resnet, small_cnn, vit, wideresnet  # noqa: F401
from trainers.models.base import DataCfg, ImageClassifier
from trainers.models.registry import MODELS, build_model

__all__ = ["DataCfg", "ImageClassifier", "MODELS", "build_model"]
