"""Commands around the pipeline that are not DVC stages: profiles as DVC experiments, the seed estimate,
the release of served models."""
