"""What TensorBoard's HParams view is served for a logdir: the hparams plugin's own routes
(`/experiment`, `/session_groups`) over TensorBoard's event multiplexer and data provider, loaded
as `tensorboard --logdir` loads it, answering the requests its frontend sends."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
from tensorboard.plugins import base_plugin
from tensorboard.plugins.hparams import hparams_plugin
from werkzeug.test import Client

STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


def hparams_view(logdir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the experiment: `hparamInfos`, `metricInfos`; the session groups) as JSON."""
    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(logdir))
    mux.Reload()
    provider = data_provider.MultiplexerDataProvider(mux, str(logdir))
    routes = hparams_plugin.HParamsPlugin(base_plugin.TBContext(logdir=str(logdir), multiplexer=mux,
                                                                data_provider=provider)).get_plugin_apps()

    def post(route: str, body: dict[str, Any]) -> dict[str, Any]:
        response = Client(routes[route]).post(route, data=json.dumps(body), content_type="application/json")
        assert response.status_code == 200, response.get_data(as_text=True)
        return json.loads(response.get_data())

    experiment = post("/experiment", {})
    groups = post("/session_groups", {"startIndex": 0, "sliceSize": 10_000, "allowedStatuses": STATUSES})
    return experiment, groups.get("sessionGroups", [])


def columns(experiment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{parameter: its HParamInfo} of the experiment."""
    return {info["name"]: info for info in experiment.get("hparamInfos", [])}
