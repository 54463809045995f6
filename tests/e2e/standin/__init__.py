"""A KubeVirt stand-in for the end-to-end tier: virt-handler's guest memory metrics (and, in
time, virt-controller's hotplug-by-migration), driven by demand the tests control."""
