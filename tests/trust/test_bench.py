from tinyward.bench import trust as bench


def test_bench_measures_every_operation_on_both_sides() -> None:
    rows = bench.run(seconds=0.02)
    assert [r.operation.split(" ")[0] for r in rows] == [
        "sign",
        "verify",
        "seal",
        "unseal",
        "protected",
        "protected",
    ]
    for row in rows:
        assert row.core_per_second > 0 and row.direct_per_second > 0
