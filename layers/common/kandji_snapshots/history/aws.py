"""The AWS side of the history copy: Athena runs the INSERTs, Glue says which partitions it committed."""

from __future__ import annotations

from typing import Any

from kandji_snapshots.errors import ConfigurationError
from kandji_snapshots.history.copier import QueryState, QueryStatus


class AthenaEngine:
    """StartQueryExecution / GetQueryExecution in one workgroup (which sets the results location, its
    encryption and the bytes-scanned cap) and one database."""

    def __init__(self, athena_client: Any, workgroup: str, database: str):
        self._athena, self.workgroup, self.database = athena_client, workgroup, database

    def start(self, sql: str, token: str) -> str:
        response = self._athena.start_query_execution(
            QueryString=sql, ClientRequestToken=token, WorkGroup=self.workgroup,
            QueryExecutionContext={"Database": self.database})
        return response["QueryExecutionId"]

    def status(self, query_id: str) -> QueryStatus:
        status = self._athena.get_query_execution(QueryExecutionId=query_id)["QueryExecution"]["Status"]
        return QueryStatus(QueryState(status["State"]), status.get("StateChangeReason", ""))


class GluePartitionCatalog:
    """The history tables' partitions, registered in Glue by Athena when an INSERT commits."""

    def __init__(self, glue_client: Any, database: str):
        self._glue, self.database = glue_client, database

    def copied_snapshots(self, table: str, since_day: str) -> set[str]:
        paginator = self._glue.get_paginator("get_partitions")
        copied: set[str] = set()
        try:
            for page in paginator.paginate(DatabaseName=self.database, TableName=table,
                                           Expression=f"dt >= '{since_day}'"):
                copied.update(partition["Values"][1] for partition in page.get("Partitions", []))
        except self._glue.exceptions.EntityNotFoundException:
            raise ConfigurationError(f"The Glue table {self.database}.{table} does not exist: deploy the stack's "
                                     "history tables (template.yaml, HistoryTables) first.") from None
        return copied
