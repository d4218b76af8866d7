"""Where a job finds the JVM pieces it needs, the same way in a mini-cluster and on a cluster.

PyFlink has no Kafka connector of its own: the `flink-sql-connector-kafka` jar (resolved
from Maven Central by infra/local/pom.xml, pinned to the build for Flink 2.2) is handed to
the job through `pipeline.jars`. That works for the in-process mini-cluster and for
`flink run -py` alike, so no job needs the jar in the cluster's lib/ folder. Our own small
jar (jobs/java: the Kafka key serializer and partitioner, built by `make jars` into the
same folder) travels the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

CONNECTOR_ENV = "FEDSTREAM_CONNECTOR_JAR"
KEYS_ENV = "FEDSTREAM_KEYS_JAR"
_REPO_ROOT = Path(__file__).resolve().parents[3]
_DEFAULT_JAR_DIR = _REPO_ROOT / "infra" / "local" / ".lib" / "flink"


class MissingConnectorError(RuntimeError):
    """The Kafka connector jar is not where the job looks for it."""


def _jar(env: str, pattern: str) -> Path:
    """$env when set, else the newest `pattern` in the folder `make jars` fills."""
    explicit = os.environ.get(env)
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise MissingConnectorError(f"{env}={explicit} is not a file")
        return path.resolve()
    jars = sorted(_DEFAULT_JAR_DIR.glob(pattern))
    if not jars:
        raise MissingConnectorError(
            f"no {pattern} in {_DEFAULT_JAR_DIR}; run 'make jars' or set {env}"
        )
    return jars[-1]


def connector_jar() -> Path:
    """The Kafka connector jar: $FEDSTREAM_CONNECTOR_JAR, else the one `make jars` resolved."""
    return _jar(CONNECTOR_ENV, "flink-sql-connector-kafka-*.jar")


def keys_jar() -> Path:
    """fedstream's key serializer and partitioner (jobs/java): $FEDSTREAM_KEYS_JAR, else
    the one `make jars` built."""
    return _jar(KEYS_ENV, "fedstream-flink-keys*.jar")


def job_jars() -> list[Path]:
    """Every jar the job hands to Flink (`pipeline.jars`)."""
    return [connector_jar(), keys_jar()]


def jar_url(path: Path) -> str:
    """`pipeline.jars` takes URLs."""
    return path.resolve().as_uri()
