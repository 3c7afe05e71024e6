"""service/settings.py: the worker count comes from one place, and a bad override stops the server in one line."""
import pytest

from service.settings import RESOURCES, cpus, threads, workers


def test_the_default_is_one_worker_per_reserved_core():
    assert workers({}) == int(RESOURCES["cpu"]) == 2      # 2 cores, 2 workers


@pytest.mark.parametrize("raw", ["0", "-1", "two", "", "65", "1.5"])
def test_a_bad_worker_count_is_refused_with_its_value(raw):
    with pytest.raises(SystemExit, match="FACES_WORKERS must be a whole number"):
        workers({"FACES_WORKERS": raw})


def test_an_override_sets_the_worker_count():
    assert workers({"FACES_WORKERS": "4"}) == 4


def test_the_pods_cpu_request_sets_workers_and_their_threads():
    # deploy/k8s passes the pod's CPU request as FACES_CPUS (downward API); not the node's core count
    assert (workers({"FACES_CPUS": "6"}), threads({"FACES_CPUS": "6"})) == (6, 1)
    assert threads({"FACES_CPUS": "8", "FACES_WORKERS": "2"}) == 4
    assert threads({"FACES_CPUS": "1", "FACES_WORKERS": "2"}) == 1      # never 0 threads
    with pytest.raises(SystemExit, match="FACES_CPUS must be a whole number"):
        cpus({"FACES_CPUS": "2.5"})
