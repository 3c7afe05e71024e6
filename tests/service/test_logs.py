"""service/logs.py: BentoML's ERROR-with-traceback for a 4xx becomes one WARNING line; 5xx stay."""
import logging
import sys

from pydantic import BaseModel, ValidationError

from service.logs import ClientErrorFilter


class _In(BaseModel):
    n: int


def _record(exc: BaseException) -> logging.LogRecord:
    try:
        raise exc
    except BaseException:
        info = sys.exc_info()
    return logging.LogRecord("bentoml", logging.ERROR, __file__, 1, "Exception on %s [%s]", ("/predict", "POST"), info)


def test_a_validation_error_becomes_one_warning_line_with_the_reason():
    try:
        _In(n="x")
    except ValidationError as e:
        rec = _record(e)
    assert ClientErrorFilter().filter(rec)
    assert rec.levelname == "WARNING" and rec.exc_info is None
    assert rec.getMessage().startswith("POST /predict 400 n: Input should be a valid integer")


def test_a_server_error_keeps_its_level_and_traceback():
    rec = _record(RuntimeError("boom"))
    assert ClientErrorFilter().filter(rec)
    assert rec.levelname == "ERROR" and rec.exc_info is not None
