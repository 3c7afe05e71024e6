"""Face photos -> gender and rating: `core` (pure), `stages` (DVC), `cli`, and `tracking` (the one MLflow
adapter). docs/architecture.md is the map."""
