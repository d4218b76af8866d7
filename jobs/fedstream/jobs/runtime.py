"""Where a job finds the JVM pieces it needs, the same way in a mini-cluster and on a cluster.

PyFlink has no Kafka connector of its own: the `flink-sql-connector-kafka` jar (resolved
from Maven Central by infra/local/pom.xml, pinned to the build for Flink 2.2) is handed to
the job through `pipeline.jars`. That works for the in-process mini-cluster and for
`flink run -py` alike, so no job needs the jar in the cluster's lib/ folder.
"""

from __future__ import annotations

import os
from pathlib import Path

CONNECTOR_ENV = "FEDSTREAM_CONNECTOR_JAR"
_REPO_ROOT = Path(__file__).resolve().parents[3]
_DEFAULT_JAR_DIR = _REPO_ROOT / "infra" / "local" / ".lib" / "flink"


class MissingConnectorError(RuntimeError):
    """The Kafka connector jar is not where the job looks for it."""


def connector_jar() -> Path:
    """The Kafka connector jar: $FEDSTREAM_CONNECTOR_JAR, else the one `make jars` resolved."""
    explicit = os.environ.get(CONNECTOR_ENV)
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise MissingConnectorError(f"{CONNECTOR_ENV}={explicit} is not a file")
        return path.resolve()
    jars = sorted(_DEFAULT_JAR_DIR.glob("flink-sql-connector-kafka-*.jar"))
    if not jars:
        raise MissingConnectorError(
            f"no flink-sql-connector-kafka jar in {_DEFAULT_JAR_DIR}; run 'make jars' "
            f"or set {CONNECTOR_ENV}"
        )
    return jars[-1]


def jar_url(path: Path) -> str:
    """`pipeline.jars` takes URLs."""
    return path.resolve().as_uri()
