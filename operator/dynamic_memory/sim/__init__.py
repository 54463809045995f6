"""The simulator: clusters, scenarios and trace replay, driving the very same policy code."""
