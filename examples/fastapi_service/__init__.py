"""An example FastAPI service that runs CPU-heavy work in taskengine's worker processes."""
