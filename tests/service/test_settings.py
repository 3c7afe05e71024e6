"""service/settings.py: the worker count comes from one place, and a bad override stops the server in one line."""
import pytest

from service.settings import RESOURCES, workers


def test_the_default_is_one_worker_per_reserved_core():
    assert workers({}) == int(RESOURCES["cpu"]) == 2      # 2 cores, 2 workers


@pytest.mark.parametrize("raw", ["0", "-1", "two", "", "65", "1.5"])
def test_a_bad_worker_count_is_refused_with_its_value(raw):
    with pytest.raises(SystemExit, match="FACES_WORKERS must be a whole number"):
        workers({"FACES_WORKERS": raw})


def test_an_override_sets_the_worker_count():
    assert workers({"FACES_WORKERS": "4"}) == 4
