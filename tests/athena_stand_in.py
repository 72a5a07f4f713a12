"""A recording stand-in for Athena, for tests that run the history handler: moto 5.2.5 speaks Athena's old JSON
protocol, the pinned botocore its REST one, so moto cannot answer it.

It answers StartQueryExecution and GetQueryExecution as Athena does (a ClientRequestToken seen before returns
its query; an unknown workgroup is refused) and keeps every query started. Two ways in:

    boto3.client("athena") replaced by the stand-in itself (tests/test_history_handler.py), or
    stand_in.serve(botocore_session): a real client whose calls the stand-in answers before anything is sent,
    so the call is signed, recorded and judged like any other (tests/iam_runtime.py).
"""

from __future__ import annotations

from typing import Any

import botocore.awsrequest


class RecordingAthena:
    def __init__(self, workgroups: dict[str, str] | None = None):
        """`workgroups`: name -> the query results location it enforces; None accepts any workgroup."""
        self.workgroups = workgroups
        self.started: list[dict[str, Any]] = []
        self.failing_tokens: set[str] = set()  # queries started with these tokens end FAILED

    def start_query_execution(self, **request: Any) -> dict[str, Any]:
        if self.workgroups is not None and request.get("WorkGroup") not in self.workgroups:
            raise LookupError(f"WorkGroup {request.get('WorkGroup')} is not found.")
        for number, earlier in enumerate(self.started):
            if earlier["ClientRequestToken"] == request["ClientRequestToken"]:
                return {"QueryExecutionId": f"q{number}"}
        self.started.append(request)
        return {"QueryExecutionId": f"q{len(self.started) - 1}"}

    def get_query_execution(self, QueryExecutionId: str) -> dict[str, Any]:
        request = self.started[int(QueryExecutionId[1:])]
        failed = request["ClientRequestToken"] in self.failing_tokens
        status = ({"State": "FAILED", "StateChangeReason": "stand-in: told to fail"} if failed
                  else {"State": "SUCCEEDED"})
        output = (self.workgroups or {}).get(request.get("WorkGroup"), "s3://results/")
        return {"QueryExecution": {
            "QueryExecutionId": QueryExecutionId, "Query": request["QueryString"], "StatementType": "DML",
            "WorkGroup": request.get("WorkGroup"), "Status": status,
            "ResultConfiguration": {"OutputLocation": f"{output}{QueryExecutionId}"}}}

    # --- behind a real botocore client ------------------------------------------------------------
    def serve(self, botocore_session: Any) -> None:
        """Answer the Athena calls of clients made from this session (botocore's before-call event)."""
        botocore_session.register("before-parameter-build.athena", _keep_parameters)
        botocore_session.register("before-call.athena", self._answer)

    def _answer(self, model: Any, context: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]]:
        request = context[_PARAMETERS]
        method = getattr(self, _snake(model.name), None)
        if method is None:
            return _response(400, {"Error": {"Code": "InvalidRequestException",
                                             "Message": f"the Athena stand-in does not answer {model.name}"}})
        try:
            return _response(200, method(**request))
        except LookupError as error:
            return _response(400, {"Error": {"Code": "InvalidRequestException", "Message": str(error)}})


_PARAMETERS = "athena_stand_in_parameters"


def _keep_parameters(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    """The call's parameters as given (before-call sees them serialized, some in the URL)."""
    context[_PARAMETERS] = dict(params)


def _snake(name: str) -> str:
    return "".join(f"_{char.lower()}" if char.isupper() else char for char in name).lstrip("_")


def _response(status: int, parsed: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    return botocore.awsrequest.AWSResponse("https://athena.stand-in/", status, {}, None), parsed
