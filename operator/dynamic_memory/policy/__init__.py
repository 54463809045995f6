"""Pure decision logic: demand → target → node budget. No I/O, no kopf, no Kubernetes client."""
