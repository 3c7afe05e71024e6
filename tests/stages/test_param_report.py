"""pipeline/stages/param_report.py: which models the report covers."""
from pipeline.core.config import load_params
from pipeline.stages.param_report import models_in_params

from conftest import ROOT


def test_report_covers_every_model_in_params_and_the_course_reference():
    names = models_in_params(load_params(ROOT / "params.yaml"))
    assert set(names) >= {"course-reference"} and any(n.startswith("gender-") for n in names)
    cfg, heads = names["course-reference"]
    assert cfg.image_size == 128 and heads == {"outputs": 10}


