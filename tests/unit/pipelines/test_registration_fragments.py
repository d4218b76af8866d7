"""Large registrations in fragments (`admission.take_registration_fragment`), without Flink.

A registration in fragments signed by a trusted owner comes out whole and routed to its
model; fragments by an unknown owner, with a signer that is not the key id, or with no
owner keys configured at all are refused before anything is stored; one owner's new
registration drops its incomplete one.
"""

from __future__ import annotations

from pathlib import Path

from fedstream.pipelines.admission import take_registration_fragment
from fedstream.pipelines.limits import InputLimits
from fedstream.pipelines.model_process import Envelope
from fedstream.pipelines.reassembly import Assembly, DictFragmentStore
from fedstream.schemas import decode, encode
from fedstream.schemas.fragments import FRAGMENT, split_record
from fedstream.schemas.signing import ReleaseSigner, TrustedKeys, load_signing_key, write_key_pair
from tests.support.onnx_models import linear_model
from tests.support.owner_key import owner_public_key, owner_signer
from tests.support.records import CONTROL_TOPIC, registration_bytes

OWNERS = TrustedKeys.from_files(owner_public_key())
VALUE = registration_bytes("frag-model", linear_model(40, 30, seed=1))


def pieces(
    owner: ReleaseSigner, *, signer: str | None = None, record: str = "frag-model"
) -> list[Envelope]:
    parts = split_record(
        VALUE, record_id=record, signer=signer or owner.key_id, key=owner, max_data_bytes=2000
    )
    return [Envelope(encode(FRAGMENT, p), CONTROL_TOPIC, 0, i) for i, p in enumerate(parts)]


def run(envelopes: list[Envelope], owners: TrustedKeys | None = OWNERS) -> tuple[list[str], object]:
    store, assembly = DictFragmentStore(), None
    details: list[str] = []
    routed = None
    for envelope in envelopes:
        taken, routed = take_registration_fragment(
            assembly, envelope, owners, store, InputLimits(), 70_000
        )
        assembly = taken.assembly
        details += [decode(o.value).record["detail"] for o in taken.letters]
    assert (assembly is None and store.pieces == {}) or details == []
    return details, routed


def test_a_trusted_owners_fragments_give_the_routed_registration() -> None:
    details, routed = run(pieces(owner_signer()))
    assert details == []
    assert routed is not None and routed.model_id == "frag-model" and routed.dead is None  # type: ignore[attr-defined]


def test_untrusted_fragments_are_refused_before_anything_is_stored(tmp_path: Path) -> None:
    stranger = load_signing_key(write_key_pair(tmp_path, "stranger")[0])
    details, routed = run(pieces(stranger))
    assert routed is None and all("unknown owner key" in d for d in details)
    details, _ = run(pieces(owner_signer(), signer="someone"))
    assert all("must be its owner key id" in d for d in details)
    details, _ = run(pieces(owner_signer()), owners=None)
    assert all("needs [trust] owner_keys" in d for d in details)


def test_one_owners_new_registration_drops_its_incomplete_one() -> None:
    first = pieces(owner_signer(), record="frag-a")[0]
    other = pieces(owner_signer(), record="frag-b")[0]
    store = DictFragmentStore()
    taken, _ = take_registration_fragment(None, first, OWNERS, store, InputLimits())
    assert isinstance(taken.assembly, Assembly)
    taken, _ = take_registration_fragment(taken.assembly, other, OWNERS, store, InputLimits())
    (dropped,) = [decode(o.value).record for o in taken.letters]
    assert dropped["model_id"] == "frag-a" and "never came" in dropped["detail"]
    assert taken.assembly is not None and taken.assembly.record_id == "frag-b"
