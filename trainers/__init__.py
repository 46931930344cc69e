"""Pure PyTorch: data, models, training methods, the training loop, checkpoints. Never imports Ray."""
from trainers.callbacks import Callback, FitResult
from trainers.loop import TrainingDiverged, fit
from trainers.train_config import TrainConfig, load_train_config

__all__ = ["Callback", "FitResult", "TrainConfig", "TrainingDiverged", "fit", "load_train_config"]
