"""Actuators: decisions turned into KubeVirt patches (built here, sent by the handlers)."""
