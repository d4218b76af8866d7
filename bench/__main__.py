"""`make bench`: every benchmark in turn; each writes JSON (+ markdown) to bench/results/.

Not part of the test suite's pass/fail: numbers come from here, never from timed tests.
"""

from __future__ import annotations

from bench import codec_bench, core_bench, learning, signing_bench, throughput


def main() -> None:
    print("== core: aggregation add + close vs bare numpy (1M params)", flush=True)
    core_bench.main()
    print("== codec: fastavro vs avro", flush=True)
    codec_bench.main()
    print("== signing: Ed25519 sign / verify per release and per update", flush=True)
    signing_bench.main([])
    print("== throughput: raw Kafka vs plain aggregator vs fedstream (100k params)", flush=True)
    throughput.main(
        [
            "--params",
            "100000",
            "--updates",
            "600",
            "--parallelism",
            "--profile",
            "--ablate-live-models",
            "--repeat",
            "3",
        ]
    )
    print("== learning: sync FedAvg vs FedBuff vs FedAsync vs FedBuff + int8 (3 seeds)", flush=True)
    learning.main([])


if __name__ == "__main__":
    main()
