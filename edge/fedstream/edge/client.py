"""`EdgeClient`: what one device embeds to take part in federated learning of one model.

It ties the pieces together with the rules that matter on a device:

* the newest verified release is installed in an onnxruntime session that is swapped
  atomically (`ModelRuntime`), so `predict` works during updates;
* updates are compressed with error feedback (`DeltaCompressor`), encoded with the codec,
  and produced idempotently (`RecordProducer`) under a deterministic update id
  (`make_update_id`) with `sequence` = its round when the round counter is persisted (by
  which the job recognises a re-send per device, whatever its staleness), and the
  compressor's residual and the round counter only advance once the broker acknowledged
  the update: a failed send can simply be retried, with the same id and sequence;
* every update is signed with the device's key when it has one
  (`EdgeConfig.device_key_file`): the job refuses updates its registry cannot verify;
* every failure is an `EdgeError` subclass; nothing is logged-and-dropped.

Kafka connections are opened lazily (an inference-only device never opens a producer) and
`disconnect` closes them, as a device going offline would; the next call reconnects and
looks for the newest release again.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar, cast

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fedstream.edge.compression import Compression, DeltaCompressor
from fedstream.edge.config import EdgeConfig
from fedstream.edge.errors import InvalidReleaseError, UnknownModelError
from fedstream.edge.identity import RoundCounter, make_update_id
from fedstream.edge.producer import Delivery, RecordProducer
from fedstream.edge.releases import Release, ReleaseReader, recent_dead_letters
from fedstream.edge.runtime import ModelRuntime, Prediction
from fedstream.edge.stats import DeviceStats
from fedstream.schemas import (
    GradientUpdate,
    ModelRegistration,
    UpdateMetrics,
    encode,
    registration_key,
)
from fedstream.schemas.registration_signing import sign_registration
from fedstream.schemas.update_signing import sign_update

T = TypeVar("T")

__all__ = ["EdgeClient", "SentUpdate"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SentUpdate:
    """An update the broker acknowledged."""

    update_id: str
    base_version: int
    round_index: int
    num_samples: int
    encoding: str
    size: int
    delivery: Delivery


class EdgeClient:
    """One device's connection to fedstream for one model. Use from one thread.

    `compression` is ``"none"``, ``"fp16"``, ``"int8"`` or ``"topk"`` (keeping
    `topk_fraction` of the values); `state_path`, if given, persists the round counter so
    update ids stay deterministic across restarts. With ``install_sessions=False`` releases
    are only fetched and verified (a training-only device that never runs inference).

    `sequenced`: whether updates carry their round as `sequence`, by which the job
    recognises re-sends without a staleness cut. Default: only with a `state_path`. A
    counter that restarts at 0 would repeat sequences the job has already absorbed, and
    every update until it passed them would be refused as DUPLICATE; without a sequence
    the job falls back to update ids within its dedupe horizon. Pass True when the counter
    outlives every update of the model in memory (the simulator's devices).
    """

    def __init__(
        self,
        config: EdgeConfig,
        *,
        device_id: str,
        model_id: str,
        compression: Compression | str = Compression.NONE,
        topk_fraction: float = 0.1,
        error_feedback: bool = True,
        state_path: str | os.PathLike[str] | None = None,
        install_sessions: bool = True,
        session_threads: int = 1,
        sequenced: bool | None = None,
    ) -> None:
        if not device_id or not model_id:
            raise ValueError("device_id and model_id must not be empty")
        self.config = config
        self.device_id = device_id
        self.model_id = model_id
        self.compressor = DeltaCompressor(
            compression, topk_fraction=topk_fraction, error_feedback=error_feedback
        )
        self.rounds = RoundCounter(state_path)
        self.sequenced = state_path is not None if sequenced is None else sequenced
        self.runtime = ModelRuntime(threads=session_threads)
        self._install_sessions = install_sessions
        self._producer: RecordProducer | None = None
        self._reader: ReleaseReader | None = None
        self._release: Release | None = None
        #: sent / retried / failed updates, releases installed / refused (`DeviceStats`)
        self.stats = DeviceStats()

    # ------------------------------------------------------------------ models
    @property
    def release(self) -> Release | None:
        """The newest release this client has received (and installed)."""
        return self._release

    def wait_for_model(self, timeout_s: float = 30.0) -> Release:
        """The newest release of the model, installed; waits up to `timeout_s` for one.

        Raises `UnknownModelError` if none exists in time, `DigestMismatchError` for a
        corrupted one (never installed), `BrokerUnavailableError` if Kafka is down.
        """
        if self._release is not None:
            newer = self.refresh(0.0)
            return newer or self._release
        try:
            return self._accept(self._counted(lambda: self._reader_().newest(timeout_s)))
        except UnknownModelError as error:
            rejected = [
                d
                for d in recent_dead_letters(self.config, self.model_id)
                if d["reason"] == "BAD_REGISTRATION"
            ]
            if rejected:
                raise UnknownModelError(
                    f"{error}; the job rejected its registration: {rejected[-1]['detail']}"
                ) from error
            raise

    def refresh(self, timeout_s: float = 0.0) -> Release | None:
        """A release newer than the current one, installed, or None if there is none yet."""
        found = self._counted(lambda: self._reader_().poll_newest(timeout_s))
        if found is None or (self._release is not None and found.version <= self._release.version):
            return None
        return self._accept(found)

    def infer(self, inputs: ArrayLike) -> Prediction:
        """Outputs of the installed model and the version that produced them."""
        return self.runtime.infer(inputs)

    def predict(self, inputs: ArrayLike) -> NDArray[Any]:
        """First output of the installed model (e.g. logits)."""
        return self.runtime.predict(inputs)

    def _counted(self, read: Callable[[], T]) -> T:
        """`read()`, counting a release refused for its digest or signature."""
        try:
            return read()
        except InvalidReleaseError:
            self.stats.releases_refused += 1
            raise

    def _accept(self, release: Release) -> Release:
        if self._install_sessions:
            self.runtime.install(release)
        self._release = release
        self.stats.releases_installed += 1
        return release

    # ------------------------------------------------------------------ sending
    def register(self, registration: ModelRegistration) -> Delivery:
        """Send a ModelRegistration to the control topic (the job then releases version 0),
        signed with `config.owner_key_file` when there is one (the job requires it by default).

        A registration larger than the control topic takes (a large model's template and
        initial weights) goes out in fragments signed by the owner's key (the Delivery is
        the last one's). Registering is idempotent only for identical bytes; a different
        registration for an existing model_id is dead-lettered by the job
        (BAD_REGISTRATION, or OWNER_MISMATCH from another owner's key).
        """
        if registration["model_id"] != self.model_id:
            raise ValueError(
                f"registration is for {registration['model_id']!r}, client for {self.model_id!r}"
            )
        owner = self.config.owner_signer
        record = registration if owner is None else sign_registration(registration, owner)
        value = encode("ModelRegistration", record)
        key = registration_key(self.model_id)  # the control topic is compacted by model
        # larger than the topic takes (a large model's weights): fragments signed by the owner
        return self._producer_().send_record(
            self.config.control_topic,
            value,
            key,
            record_id=self.model_id,
            signer=owner.key_id if owner else "",
            signing_key=owner,
        )

    def send_update(
        self,
        delta: ArrayLike,
        *,
        base_version: int,
        num_samples: int,
        metrics: UpdateMetrics | None = None,
    ) -> SentUpdate:
        """Compress, encode and produce `delta` = w_local - w_base (one flat vector in the
        registration's parameter order) trained from release `base_version`.

        An update larger than the topic takes (a large model) goes out in fragments signed
        by the device's key (`RecordProducer.send_record`; `delivery` is the last one's).
        Returns once the broker acknowledged it. On any error nothing advances (round
        counter, error-feedback residual), so calling again re-sends the same update id.
        """
        if num_samples <= 0:
            raise ValueError(f"num_samples must be > 0, got {num_samples}")
        vector = np.asarray(delta, dtype=np.float32).reshape(-1)
        if not np.isfinite(vector).all():
            raise ValueError("delta has NaN or infinite values (diverged local training?)")
        prepared = self.compressor.prepare(vector)
        round_index = self.rounds.current(self.model_id)
        update_id = make_update_id(self.device_id, self.model_id, base_version, round_index)
        record: GradientUpdate = {
            "update_id": update_id,
            "device_id": self.device_id,
            "model_id": self.model_id,
            "base_version": int(base_version),
            "num_samples": int(num_samples),
            "created_at": int(time.time() * 1000),
            "delta": prepared.payload,
            "metrics": metrics,
            "sequence": round_index if self.sequenced else None,
            "key_id": None,
            "signature": None,
        }
        if self.config.device_signer is not None:  # who sent it: the job verifies this first
            record = cast(GradientUpdate, sign_update(record, self.config.device_signer))
        value = encode("GradientUpdate", record)
        self.stats.attempt(self.model_id, round_index)
        try:
            # larger than the topic takes (a large model): fragments signed by the device
            delivery = self._producer_().send_record(
                self.config.updates_topic,
                value,
                self.model_id.encode(),
                record_id=update_id,
                signer=self.device_id,
                signing_key=self.config.device_signer,
            )
        except Exception:
            self.stats.send_failed(self.model_id, round_index)
            raise
        self.stats.delivered(self.model_id, round_index)
        self.compressor.commit(prepared)
        self.rounds.advance(self.model_id)
        return SentUpdate(
            update_id=update_id,
            base_version=int(base_version),
            round_index=round_index,
            num_samples=int(num_samples),
            encoding=prepared.payload["encoding"],
            size=len(value),
            delivery=delivery,
        )

    # ------------------------------------------------------------------ lifecycle
    def _producer_(self) -> RecordProducer:
        if self._producer is None:
            self._producer = RecordProducer(self._client_config())
        return self._producer

    def _reader_(self) -> ReleaseReader:
        if self._reader is None:
            self._reader = ReleaseReader(self._client_config(), self.model_id)
            if self._release is not None:
                # after a reconnect: never hand out anything older than what we have
                self._reader.skip_through(self._release.version)
        return self._reader

    def _client_config(self) -> EdgeConfig:
        if self.config.client_id is not None:
            return self.config
        return replace(self.config, client_id=self.device_id)

    def disconnect(self) -> None:
        """Close the Kafka connections (the device goes offline); state is kept."""
        producer, reader = self._producer, self._reader
        self._producer = self._reader = None
        if producer is not None:
            producer.close()
        if reader is not None:
            reader.close()

    def close(self) -> None:
        self.disconnect()

    def __enter__(self) -> EdgeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
