"""The campaign's independent oracle: what happened to every update, from the topics alone.

It reads back what the stack wrote (the updates topic, the registration, the committed
releases with their lineage, the dead letters) and recomputes every version's parameters
with plain numpy from the documented FedBuff formula, deliberately *not* through
`fedstream.pipelines` (a bug shared by the job and its reference would go unseen):

    s_i = (v - 1) - base_version_i                     staleness, for the window of version v
    w_i = (1 + s_i) ** -a  x  num_samples_i            polynomial weight, weight_by_samples
    x_v = x_{v-1} + lr * sum_i w_i d_i / D             mean reducer, server SGD
    D   = K (or sum_i num_samples_i)  normalization COUNT, FedBuff's Algorithm 1
        = sum_i w_i                   normalization WEIGHT_SUM, a weighted mean

(Nguyen et al., "Federated Learning with Buffered Asynchronous Aggregation", AISTATS 2022;
the weight is Xie et al.'s polynomial staleness function; D follows the registration's
`normalization`.) Only lineage membership is taken from the job; the deltas, bases and
sample counts come from the update records themselves.

Definitions: an update is *sent* when its device got the broker's ack; *absorbed* when its
id is in a release's lineage; *refused* when a dead letter names it; *lost* = sent but
neither; *doubled* = in more than one lineage (or twice in one).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import numpy_helper

from fedstream.jobs.kafka_read import read_topic
from fedstream.schemas import decode, unpack
from tests.support.kafka_io import dead_letters, releases
from tests.support.stack import Broker

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
#: the dead-letter detail of a STALE refusal caused by the registration's max_staleness (a
#: learning decision); any other STALE (the dedupe horizon of unsequenced updates) is
#: bookkeeping, as is SEQUENCE_TOO_OLD (a re-send below its device's sequence window)
MAX_STALENESS_MARK = "max_staleness"
SEQUENCE_TOO_OLD = "SEQUENCE_TOO_OLD"


def bookkeeping(letter: Mapping[str, Any]) -> bool:
    """Whether a dead letter refused its update for the job's bookkeeping rather than for
    anything about the update (the refusals to keep under 1 %)."""
    reason, detail = str(letter["reason"]), str(letter.get("detail") or "")
    return reason == SEQUENCE_TOO_OLD or (reason == "STALE" and MAX_STALENESS_MARK not in detail)


@dataclass(frozen=True)
class Topics:
    updates: str
    control: str
    models: str
    dlq: str


@dataclass(frozen=True)
class Update:
    base_version: int
    num_samples: int
    delta: F32


def _updates(
    broker: Broker, topic: str, model_id: str
) -> tuple[dict[str, Update], dict[str, int], list[str]]:
    """The model's updates by id, how many copies of each, and ids whose copies differ."""
    found: dict[str, Update] = {}
    copies: Counter[str] = Counter()
    conflicting: list[str] = []
    for value in read_topic(broker.bootstrap, topic, broker.security):
        record = decode(value, expected="GradientUpdate").record
        if record["model_id"] != model_id:
            continue
        update = Update(
            int(record["base_version"]),
            int(record["num_samples"]),
            np.asarray(unpack(record["delta"]), np.float32).reshape(-1),
        )
        uid = str(record["update_id"])
        copies[uid] += 1
        first = found.setdefault(uid, update)
        if first is not update and (
            first.base_version != update.base_version
            or first.num_samples != update.num_samples
            or not np.array_equal(first.delta, update.delta)
        ):
            conflicting.append(uid)
    return found, dict(copies), conflicting


def _registration(broker: Broker, topic: str, model_id: str) -> dict[str, Any]:
    for value in read_topic(broker.bootstrap, topic, broker.security):
        record = decode(value, expected="ModelRegistration").record
        if record["model_id"] == model_id:
            return dict(record)
    raise AssertionError(f"no registration of {model_id!r} on {topic}")


def _weights(onnx_bytes: bytes, names: list[str]) -> F32:
    """The released ONNX file's trainable initializers, flattened in registration order."""
    model = onnx.load_from_string(onnx_bytes)
    arrays = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return np.concatenate([np.asarray(arrays[n], np.float32).reshape(-1) for n in names])


def expected_step(
    window: list[Update], version: int, aggregation: Mapping[str, Any]
) -> tuple[F64, float]:
    """The pseudo-gradient of the window that made `version`, and its total weight."""
    a = float(aggregation.get("staleness", {}).get("a", 0.5))
    by_samples = bool(aggregation.get("weight_by_samples", False))
    undiscounted = np.array([u.num_samples if by_samples else 1 for u in window], np.float64)
    staleness = np.array([version - 1 - u.base_version for u in window], np.float64)
    weights = (1.0 + staleness) ** -a * undiscounted
    count = str(aggregation.get("normalization", "WEIGHT_SUM")).upper() == "COUNT"
    divisor = undiscounted.sum() if count else weights.sum()
    deltas = np.stack([u.delta.astype(np.float64) for u in window])
    return (weights[:, None] * deltas).sum(axis=0) / divisor, float(weights.sum())


def check(
    broker: Broker,
    topics: Topics,
    model_id: str,
    sent: Collection[str],
    *,
    rtol: float = 1e-5,
    atol: float = 1e-6,
) -> dict[str, Any]:
    """The verdict on one model: counts, invariants, parameter agreement, refusals.

    The aggregation settings are the registration's as the job decodes it (defaults filled
    in by the schema), not what the campaign meant to register."""
    updates, copies, conflicting = _updates(broker, topics.updates, model_id)
    registration = _registration(broker, topics.control, model_id)
    aggregation: Mapping[str, Any] = registration["aggregation"]
    names = [str(p["name"]) for p in registration["parameters"]]
    found = [r for r in releases(broker, topics.models) if r.model_id == model_id]
    letters = [d for d in dead_letters(broker, topics.dlq) if d["model_id"] == model_id]

    versions = [r.version for r in found]
    absorbed = Counter(u for r in found[1:] for u in r.lineage["update_ids"])
    refused = {str(d["update_id"]) for d in letters if d.get("update_id")}
    sent_set = set(sent)
    lost = sorted(sent_set - set(absorbed) - refused)
    doubled = sorted(u for u, n in absorbed.items() if n > 1)
    resent = sorted(u for u, n in copies.items() if n > 1)
    by_reason = Counter(str(d["reason"]) for d in letters)
    stale_bookkeeping = sum(1 for d in letters if d["reason"] == "STALE" and bookkeeping(d))
    # distinct sent ids refused for bookkeeping (a re-send may be refused more than once)
    kept_out = {str(d["update_id"]) for d in letters if bookkeeping(d)} & sent_set

    lr = float(aggregation.get("server_optimizer", {}).get("learning_rate", 1.0))
    x = np.asarray(unpack(registration["initial_parameters"]), np.float32).reshape(-1)
    worst, mismatched, weight_mismatch, unknown = 0.0, [], [], sorted(set(absorbed) - set(updates))
    for release in found:
        if release.version > 0:
            if unknown:
                break  # an id with no update record: the rest cannot be recomputed
            window = [updates[u] for u in release.lineage["update_ids"]]
            step, total = expected_step(window, release.version, aggregation)
            x = (x + (lr * step).astype(np.float32)).astype(np.float32)
            if not np.isclose(total, float(release.lineage["total_weight"]), rtol=1e-5):
                weight_mismatch.append(release.version)
        got = _weights(release.onnx, names)
        scale = np.maximum(np.abs(x), atol / rtol)
        worst = max(worst, float(np.max(np.abs(got - x) / scale)))
        if not np.allclose(got, x, rtol=rtol, atol=atol):
            mismatched.append(release.version)
    return {
        "model_id": model_id,
        "sent": len(sent_set),
        "in_updates_topic": len(updates),
        "absorbed": len(absorbed),
        "refused_ids": len(refused - set(absorbed)),
        "lost": len(lost),
        "lost_ids": lost[:20],
        "doubled": len(doubled),
        "doubled_ids": doubled[:20],
        "resent_ids": len(resent),
        "resent_absorbed_once": sum(1 for u in resent if absorbed.get(u) == 1),
        "conflicting_copies": len(conflicting),
        "absorbed_without_record": len(unknown),
        "versions": len(versions),
        "versions_contiguous": versions == list(range(len(versions))),
        "params_equal": not mismatched and not unknown and bool(found),
        "params_max_rel_error": worst,
        "params_mismatched_versions": mismatched[:20],
        "total_weight_mismatched_versions": weight_mismatch[:20],
        "refused_by_reason": dict(sorted(by_reason.items())),
        "stale_bookkeeping": stale_bookkeeping,
        "sequence_too_old": by_reason.get(SEQUENCE_TOO_OLD, 0),
        "bookkeeping_refused_ids": len(kept_out),
        "bookkeeping_refused_fraction": len(kept_out) / max(1, len(sent_set)),
    }
