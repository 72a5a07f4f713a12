"""kandji-snapshots: a complete, queryable history of a Kandji (Iru) device fleet.

The package is the shared domain of the Lambda functions. Handlers build the adapters
(Kandji HTTP, S3, SNS) and call into it; everything here is plain Python.
"""

__version__ = "0.1.0"
