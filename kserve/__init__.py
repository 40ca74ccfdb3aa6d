"""KServe manifests: InferenceService, our TorchServe ServingRuntime, PVC setup, Grafana."""
