"""Settings for soak and guarantee runs: the test settings, plus channel-layer overrides.

``SOAK_LAYER_CONFIG`` (JSON object) is merged into ``CHANNEL_LAYERS["default"]["CONFIG"]``,
e.g. ``{"expiry": 3, "group_expiry": 3}`` to prove that streams outlive the layer's
expiries, or ``{"capacity": 5}`` to make the layer drop messages under a burst.
"""

import json as _json
import os as _os

from tests.settings import *  # noqa: F403

_layer_config = _os.environ.get("SOAK_LAYER_CONFIG", "")
if _layer_config:
    CHANNEL_LAYERS["default"].setdefault("CONFIG", {}).update(_json.loads(_layer_config))  # noqa: F405
