"""Where a job finds the JVM pieces it needs, the same way in a mini-cluster and on a cluster.

PyFlink has no Kafka connector of its own: the `flink-sql-connector-kafka` jar (resolved
from Maven Central by infra/local/pom.xml, pinned to the build for Flink 2.2) is handed to
the job through `pipeline.jars`. That works for the in-process mini-cluster and for
`flink run -py` alike, so no job needs the jar in the cluster's lib/ folder. Our own small
jar (jobs/java: the Kafka key serializer and partitioner, built by `make jars` into the
same folder) travels the same way.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

CONNECTOR_ENV = "FEDSTREAM_CONNECTOR_JAR"
KEYS_ENV = "FEDSTREAM_KEYS_JAR"
_REPO_ROOT = Path(__file__).resolve().parents[3]
_DEFAULT_JAR_DIR = _REPO_ROOT / "infra" / "local" / ".lib" / "flink"
#: Flink plugins resolved by infra/local/pom.xml: metrics-prometheus/ (the reporter).
PLUGINS_DIR = _REPO_ROOT / "infra" / "local" / ".lib" / "flink-plugins"
#: PyFlink's lib/ jars plus the reporter, for a mini-cluster (`use_metrics_reporter`).
LOCAL_LIB_DIR = _REPO_ROOT / "infra" / "local" / ".lib" / "flink-local-lib"


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


def use_metrics_reporter() -> None:
    """Put Flink's Prometheus reporter on the classpath of the mini-cluster this process
    is about to start. A mini-cluster loads reporters from its classpath only (not as
    plugins), and PyFlink builds that classpath from $FLINK_LIB_DIR when it launches its
    JVM: so FLINK_LIB_DIR becomes a folder of links to PyFlink's own lib/ jars plus the
    reporter jar `make jars` resolved (infra/local/.lib/flink-local-lib). An operator's own
    FLINK_LIB_DIR is kept; without the jar the job runs without an endpoint."""
    import pyflink

    reporters = sorted(PLUGINS_DIR.glob("metrics-prometheus/flink-metrics-prometheus-*.jar"))
    if "FLINK_LIB_DIR" in os.environ or "FLINK_HOME" in os.environ or not reporters:
        return
    folder = LOCAL_LIB_DIR
    folder.mkdir(parents=True, exist_ok=True)
    jars = [*Path(pyflink.__file__).resolve().parent.glob("lib/*.jar"), reporters[-1]]
    for jar in jars:
        link = folder / jar.name
        if link.is_symlink() and not link.exists():  # the virtualenv was rebuilt
            link.unlink(missing_ok=True)
        if not link.exists():
            with contextlib.suppress(FileExistsError):  # a job starting beside this one
                link.symlink_to(jar)
    # PyFlink reads FLINK_LIB_DIR only when FLINK_HOME is set (else it derives both from
    # its own package): set both, to where PyFlink would have found them
    os.environ.setdefault("FLINK_HOME", str(Path(pyflink.__file__).resolve().parent))
    os.environ["FLINK_LIB_DIR"] = str(folder)
