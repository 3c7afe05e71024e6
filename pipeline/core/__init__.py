"""The pipeline's core: pure functions and types (images, faces, data, networks, training, metrics,
params). No module here imports a stage, a CLI or a tool (mlflow, dvc, bentoml, great_expectations):
the stages and the service import it, and the serving image copies this folder whole."""
