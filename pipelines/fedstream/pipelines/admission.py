"""Which registrations the job acts on: signed by a trusted owner, one owner per model,
and at most `limits.max_models` models.

Registrations are rare and decide what every device of a model installs, so they meet
under one key first (the job's `registry` operator, `flink_functions.RegistryFunction`),
where the job can count models and remember each model's owner; only then do they reach
the model's own keyed state. This module is that operator's logic as a plain function, so
the in-memory job of the tests (`tests/support/local_job.py`) runs exactly the same rules.

Order of the checks, and why: the signature first (an unauthenticated record must not
learn anything about the job's models, nor take a slot), then ownership of an existing
model id, then the model limit for a new one. A registration that does not decode or does
not check (`RegisteredModel.from_bytes`) passes on without a slot, and the model refuses
it with the precise reason (BAD_REGISTRATION).

A registration too large for one Kafka record (a large model's template and initial
weights) comes in signed fragments (`fedstream.schemas.fragments`);
`take_registration_fragment` verifies each against the owner keys the job trusts before
storing it (one assembly in flight per owner key, `reassembly.Reassembler`) and hands the
whole registration to the checks above. Fragments need owner keys: with unsigned
registrations allowed there is no key to verify a fragment with, so they are refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedstream.pipelines.limits import InputLimits
from fedstream.pipelines.model_process import (
    REGISTRATION,
    Envelope,
    Output,
    RegisteredModel,
    Routed,
    dead_letter,
    route,
)
from fedstream.pipelines.reassembly import Assembly, FragmentStore, Reassembler, Taken
from fedstream.schemas import CodecError, decode
from fedstream.schemas.registration_signing import verify_registration
from fedstream.schemas.signing import SignatureError, TrustedKeys

__all__ = ["Admission", "admit_registration", "take_registration_fragment"]


@dataclass(frozen=True, slots=True)
class Admission:
    """The registry's verdict on one registration.

    `dead`: its dead letter (nothing passes on). Otherwise the record passes on to the
    model, and with `claims_slot` it is a new model that takes one of the job's slots,
    owned by `owner` (the verified owner key id; None when unsigned ones are allowed).
    """

    dead: Output | None = None
    claims_slot: bool = False
    owner: str | None = None


def admit_registration(
    envelope: Envelope,
    model_id: str,
    *,
    known: bool,
    known_owner: str | None,
    registered: int,
    limits: InputLimits,
    owner_keys: TrustedKeys | None,
    dlq_max_bytes: int | None = None,
) -> Admission:
    """The verdict on `envelope`, a registration routed to `model_id`.

    `known`: the model already holds a slot, owned by `known_owner` (None if it was
    registered unsigned); `registered`: how many slots are taken; `owner_keys`: the
    owner keys the job trusts, or None when unsigned registrations are allowed.
    """

    def refuse(reason: str, detail: str) -> Admission:
        dead = dead_letter(envelope, reason, detail, model_id=model_id, max_bytes=dlq_max_bytes)
        return Admission(dead=dead)

    owner = None
    if owner_keys is not None:
        try:
            owner = verify_registration(decode(envelope.value, expected=REGISTRATION), owner_keys)
        except CodecError:
            return Admission()  # the model refuses it with the codec's reason
        except SignatureError as error:
            return refuse("UNAUTHENTICATED", f"registration of {model_id!r}: {error}")
    if known:
        if known_owner is not None and owner is not None and owner != known_owner:
            return refuse(
                "OWNER_MISMATCH",
                f"model {model_id!r} belongs to owner key {known_owner}; this registration "
                f"is signed by {owner} (register a new model_id instead)",
            )
        return Admission(owner=owner)
    try:
        RegisteredModel.from_bytes(envelope.value)
    except (CodecError, ValueError):
        return Admission(owner=owner)
    if registered >= limits.max_models:
        return refuse(
            "MODEL_LIMIT", f"the job already holds {registered} models (limits.max_models)"
        )
    return Admission(claims_slot=True, owner=owner)


def take_registration_fragment(
    current: Assembly | None,
    envelope: Envelope,
    owner_keys: TrustedKeys | None,
    store: FragmentStore,
    limits: InputLimits,
    dlq_max_bytes: int | None = None,
) -> tuple[Taken, Routed | None]:
    """Take a piece of a large registration into its owner's assembly `current`; with
    the last piece, also the whole registration routed as if it had come in one record
    (its model id, or its dead letter)."""

    def key_for(fragment: Mapping[str, Any]) -> Ed25519PublicKey | str:
        signer, key_id = fragment["signer"], fragment["key_id"]
        if owner_keys is None:
            return "a fragmented registration needs [trust] owner_keys to be verified"
        if signer != key_id:
            return f"signer {signer!r} of a registration must be its owner key id {key_id!r}"
        key = owner_keys.keys.get(str(key_id))
        if key is None:
            return f"signed by unknown owner key {key_id!r} (trusted: {owner_keys.key_ids})"
        return key

    taken = Reassembler(limits, "model_id", dlq_max_bytes).take(current, envelope, key_for, store)
    if taken.whole is None:
        return taken, None
    return taken, route(taken.whole, "", taken.whole.topic, limits, dlq_max_bytes)
