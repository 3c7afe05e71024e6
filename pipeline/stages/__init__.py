"""The DVC stages: one module per stage in dvc.yaml, each a core function plus a thin `main()`. A stage
imports the core and the tracking adapter (pipeline/tracking.py), never another stage."""
