"""`make bench`: every benchmark in turn; each writes JSON (+ markdown) to bench/results/.

Not part of the test suite's pass/fail: numbers come from here, never from timed tests.
"""

from __future__ import annotations

from bench import (
    codec_bench,
    core_bench,
    learning,
    learning_sweep,
    profile_job,
    signing_bench,
    throughput,
)


def main() -> None:
    print("== core: aggregation add + close vs bare numpy (1M params)", flush=True)
    core_bench.main()
    print("== codec: fastavro vs avro", flush=True)
    codec_bench.main()
    print("== signing: Ed25519 sign / verify per release and per update", flush=True)
    signing_bench.main([])
    for params in ("100000", "1000000"):
        print(f"== throughput: fedstream vs the plain aggregator, steady state ({params} params)")
        throughput.main(["--params", params])
    print("== profile: our Python against the framework around it, per update (100k)")
    profile_job.main(["--params", "100000", "--cprofile"])
    print("== learning: sync FedAvg vs FedBuff vs FedAsync vs compression (3 seeds)", flush=True)
    learning.main([])
    print("== learning, simulated fleets: variants, 10-500 devices, outage (3 seeds)", flush=True)
    learning_sweep.main([])


if __name__ == "__main__":
    main()
