"""Deploying edgecam to a device: bundles, SSH deploy, safe extraction."""

from .bundle import TARGETS, Bundle, build_bundle, verify_manifest
from .safetar import safe_extract

__all__ = ["TARGETS", "Bundle", "build_bundle", "verify_manifest", "safe_extract"]
