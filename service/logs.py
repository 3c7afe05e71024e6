"""One WARNING line per client error, in the format of service/guard.py: `POST /predict 400 <reason>`.

BentoML logs every 4xx it answers (validation errors, BadInput) as ERROR with a full traceback, so one
bad client floods the log an operator reads; `ClientErrorFilter` rewrites those records in place. 5xx
keep their traceback.

    logging.getLogger("bentoml._internal.server.http_app").addFilter(ClientErrorFilter())
"""
from __future__ import annotations

import logging


class ClientErrorFilter(logging.Filter):
    """BentoML logs every 4xx it answers (validation errors, BadInput) as ERROR with a traceback;
    one bad client would flood the log an operator reads. Those become one WARNING line with the
    reason; 5xx keep their traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        status = _client_status(exc)
        if status is None:
            return True
        where = record.args if isinstance(record.args, tuple) and len(record.args) == 2 else ("?", "?")
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.msg, record.args = "%s %s %d %s", (where[1], where[0], status, _reason(exc))   # POST /predict 400 ...
        record.exc_info, record.exc_text = None, None
        return True


def _client_status(exc) -> int | None:
    from bentoml.exceptions import BentoMLException
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        return 400
    if isinstance(exc, BentoMLException) and 400 <= exc.error_code.value < 500:
        return exc.error_code.value
    return None


def _reason(exc) -> str:
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])[:300]
    return str(exc)[:300]
