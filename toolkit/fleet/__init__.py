"""Fleet validation: many vehicles' run logs against full Grad-CAM, on one machine or on Ray.

``edgecam fleet validate`` (:func:`fleet_validate`); docs/fleet.md. The pieces engines share:
:class:`FleetPlan` (what to score), :class:`FrameScorer` (score a numpy batch of frames),
:class:`FleetAggregator` (order-independent figures). Nothing here imports TensorFlow until a
frame is scored.
"""

from .aggregate import FleetAggregator, LogPart
from .api import ENGINES, FleetOptions, FleetResult, fleet_validate
from .logs import FleetLog, LogRef, LogTally, discover_logs
from .models import ModelSpec, load_specs
from .plan import FleetPlan, build_plan, model_batches, to_columns
from .scoring import FrameScorer

__all__ = [
    "ENGINES", "FleetAggregator", "FleetLog", "FleetOptions", "FleetPlan", "FleetResult", "FrameScorer",
    "LogPart", "LogRef", "LogTally", "ModelSpec", "build_plan", "discover_logs", "fleet_validate",
    "load_specs", "model_batches", "to_columns",
]
