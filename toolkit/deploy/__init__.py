"""Deploying edgecam to a device: bundles, safe extraction, SSH deploy and rollback.

``edgecam doctor`` (which runs on the device) lives in :mod:`firmware_host.doctor`.
"""

from firmware_host.manifest import verify_manifest

from .bundle import TARGETS, Bundle, Target, build_bundle, build_wheel
from .deploy import Remote, SshOptions, Step, deploy, parse_remote
from .safetar import safe_extract

__all__ = [
    "TARGETS",
    "Target",
    "Bundle",
    "build_bundle",
    "build_wheel",
    "verify_manifest",
    "safe_extract",
    "deploy",
    "parse_remote",
    "Remote",
    "SshOptions",
    "Step",
]
