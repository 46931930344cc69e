"""TensorBoard events are readable by TensorBoard's own reader, with the expected tags and the
HParams summary in the same run directory."""
from __future__ import annotations

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from orchestrator.tensorboard import TensorBoardCallback, flat_hparams, scalar_tag
from trainers.callbacks import FitResult


def test_tags():
    assert scalar_tag("val_w_robust") == "val/w_robust"
    assert scalar_tag("test_last_pgd") == "test_last/pgd"
    assert scalar_tag("test_pgd") == "test/pgd"
    assert scalar_tag("lr") == "perf/lr"
    assert scalar_tag("w_0") == "train/w_0"


def test_flat_hparams():
    assert flat_hparams({"method": {"name": "darht", "mc": 4, "x": None}, "t": [1, 2]}) == {
        "method/name": "darht", "method/mc": 4, "t": "[1, 2]"}


def test_events_readable_with_scalars_and_hparams(tmp_path):
    cb = TensorBoardCallback(tmp_path, {"method": {"name": "darht", "mc_samples": 4}, "lr": 0.01})
    for epoch in range(3):
        cb.on_epoch_end(epoch, {"epoch": epoch, "loss": 1.0 / (epoch + 1), "val_clean": 0.5, "val_pgd": 0.2,
                                "val_w_robust": 0.35, "w_0": 0.6, "lr": 0.1, "is_best": True}, None)
    cb.on_fit_end(FitResult(history=[{}] * 3, final={"test_clean": 0.9, "test_pgd": 0.3}))
    acc = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "val/clean", "val/pgd", "val/w_robust", "train/w_0", "perf/lr", "test/clean", "test/pgd"} <= tags
    assert "train/is_best" not in tags and "train/epoch" not in tags
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3]
    assert [round(e.value, 4) for e in acc.Scalars("train/loss")] == [1.0, 0.5, 0.3333]
    plugin = acc.PluginTagToContent("hparams")
    session = plugin_data_pb2.HParamsPluginData.FromString(plugin["_hparams_/session_start_info"]).session_start_info
    assert session.hparams["method/name"].string_value == "darht"
    assert session.hparams["method/mc_samples"].number_value == 4
    experiment = plugin_data_pb2.HParamsPluginData.FromString(plugin["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in experiment.metric_infos} == {"val/w_robust", "val/clean", "val/pgd"}


def test_other_ranks_write_nothing(tmp_path):
    cb = TensorBoardCallback(tmp_path / "tb", {}, rank=1)
    cb.on_epoch_end(0, {"loss": 1.0}, None)
    assert not (tmp_path / "tb").exists()
