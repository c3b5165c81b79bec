"""Every error the API returns is JSON: `{"message", "field"}` (and `problems` for YAML)."""

from __future__ import annotations

import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from conveyor.errors import ConveyorError, NotFoundError, RunBusyError, SpecError

# `file:line: field: message`, as SpecError words each problem
_PROBLEM = re.compile(r"^(?P<file>.*?):(?P<line>\d+|\?): (?P<field>[^:]+): (?P<message>.*)$", re.S)


class ApiError(Exception):
    """An answer other than success, raised anywhere in a route."""

    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


def problem_of(text: str) -> dict:
    """One SpecError line as {line, field, message}."""
    match = _PROBLEM.match(text)
    if not match:
        return {"line": None, "field": None, "message": text}
    line = match["line"]
    return {"line": int(line) if line.isdigit() else None, "field": match["field"],
            "message": match["message"]}


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, err: ApiError) -> JSONResponse:
        return _json(err.status, err.message, err.field)

    @app.exception_handler(SpecError)
    async def _spec_error(_request: Request, err: SpecError) -> JSONResponse:
        problems = [problem_of(p) for p in err.problems]
        first = problems[0] if problems else {"message": str(err), "field": None}
        return _json(400, first["message"], first["field"], problems=problems)

    @app.exception_handler(ConveyorError)
    async def _conveyor_error(_request: Request, err: ConveyorError) -> JSONResponse:
        status = 404 if isinstance(err, NotFoundError) else 409 if isinstance(
            err, RunBusyError) else 400
        return _json(status, str(err), None)

    @app.exception_handler(RequestValidationError)
    async def _invalid_body(_request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"] if part != "body")
        return _json(422, f"{where}: {first['msg']}", where or None)

    @app.exception_handler(HTTPException)
    async def _http_error(_request: Request, err: HTTPException) -> JSONResponse:
        return _json(err.status_code, str(err.detail), None)


def _json(status: int, message: str, field: str | None, **extra) -> JSONResponse:
    return JSONResponse({"message": message, "field": field, **extra}, status_code=status)
