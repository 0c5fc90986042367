"""Transparent traffic capture: Istio's ``istio-iptables`` rules (:mod:`.rules`, pure) and
the command that installs and removes them in a pod's network namespace (:mod:`.install`)."""

from pymesh.capture.rules import CaptureConfig, cleanup_commands, nat_rules, restore_input

__all__ = ["CaptureConfig", "cleanup_commands", "nat_rules", "restore_input"]
