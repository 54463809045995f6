"""Sources: what the operator reads (Prometheus, Kubernetes watches), turned into model data."""
