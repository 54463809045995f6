"""kubevirt-dynamic-memory: Hyper-V-style Dynamic Memory for KubeVirt virtual machines."""

__version__ = "0.1.0"
