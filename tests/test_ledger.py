"""The pipeline ledger: whole lines only, latest line wins, torn / corrupt lines ignored with a warning."""

import json
import os

import pytest

from slidesparse.pipeline.ledger import KEYS, Ledger, LedgerWarning, ledger_path


def entry(case="prefill/tiny/INT8/cublaslt", M=16, status="done", **kw):
    e = {"case": case, "stage": case.split("/")[0], "model": "tiny", "dtype": "int8",
         "backend": case.split("/")[3], "pattern": case.split("/")[4] if case.count("/") == 4 else "dense",
         "M": M, "status": status, "error_type": None, "message": None, "location": None, "duration_s": 0.5,
         "time_utc": None, "hwtag": "CPU_py311_cpu_x86_64", "impl": "reference-dense"}
    if status == "failed":
        e.update(error_type="Signal SIGABRT", message="worker killed", location="slidesparse/engine.py:12")
    e.update(kw)
    return e


def test_path_and_roundtrip(tmp_path):
    p = ledger_path(tmp_path, "CPU_py311_cpu_x86_64")
    assert p == tmp_path / "logs" / "ledger_CPU_py311_cpu_x86_64.jsonl"
    led = Ledger(p)
    assert led.read() == [] and led.latest() == {}
    led.append(entry(M=16))
    led.append(entry(M=32, status="failed"))
    lines = p.read_text().splitlines()
    assert len(lines) == 2
    for line in lines:
        d = json.loads(line)
        assert tuple(d) == KEYS  # exactly the documented keys, in order
        assert d["time_utc"].endswith("Z")
    got = Ledger(p).read()
    assert [e["M"] for e in got] == [16, 32]
    assert got[1]["error_type"] == "Signal SIGABRT" and got[1]["location"] == "slidesparse/engine.py:12"


@pytest.mark.parametrize("bad", ["ledger/x", "", "..", "."])
def test_bad_hwtag(tmp_path, bad):
    with pytest.raises(ValueError, match="hardware tag"):
        ledger_path(tmp_path, bad)


def test_latest_line_wins(tmp_path):
    led = Ledger(tmp_path / "l.jsonl")
    led.append(entry(M=16, status="failed"))
    led.append(entry(M=16, status="done"))
    led.append(entry(M=32, status="done"))
    led.append(entry(M=32, status="failed"))
    led.append(entry(case="decode/tiny/INT8/cusparselt/2_8", M=16, status="done"))
    latest = led.latest()
    assert latest[("prefill/tiny/INT8/cublaslt", 16)]["status"] == "done"
    assert latest[("prefill/tiny/INT8/cublaslt", 32)]["status"] == "failed"
    assert latest[("decode/tiny/INT8/cusparselt/2_8", 16)]["pattern"] == "2_8"


def test_one_write_per_line(tmp_path, monkeypatch):
    """A line goes out in ONE os.write (so SIGKILL can never leave half of it)."""
    calls = []
    real = os.write

    def spy(fd, data):
        calls.append(bytes(data))
        return real(fd, data)

    monkeypatch.setattr(os, "write", spy)
    Ledger(tmp_path / "l.jsonl").append(entry())
    assert len(calls) == 1 and calls[0].endswith(b"\n") and calls[0].count(b"\n") == 1


def test_torn_last_line_is_ignored_and_repaired(tmp_path):
    p = tmp_path / "l.jsonl"
    led = Ledger(p)
    led.append(entry(M=16))
    with open(p, "ab") as f:  # a writer cut off mid-line (power loss)
        f.write(json.dumps(entry(M=32)).encode()[:40])
    with pytest.warns(LedgerWarning, match="torn last line"):
        got = Ledger(p).read()
    assert [e["M"] for e in got] == [16]
    # the next append ends the torn line first: the new line stays whole and readable
    led2 = Ledger(p)
    led2.append(entry(M=64))
    with pytest.warns(LedgerWarning):
        got = led2.read()
    assert [e["M"] for e in got] == [16, 64]
    assert len(led2.problems) == 1 and led2.problems[0].line == 2


def test_corrupt_middle_line_is_ignored(tmp_path):
    p = tmp_path / "l.jsonl"
    Ledger(p).append(entry(M=16))
    with open(p, "a") as f:
        f.write("this is not json\n")
        f.write(json.dumps({"case": "x"}) + "\n")  # JSON, but not an entry
    Ledger(p).append(entry(M=32))
    led = Ledger(p)
    with pytest.warns(LedgerWarning) as rec:
        got = led.read()
    assert [e["M"] for e in got] == [16, 32]
    assert len(rec) == 2 and {pr.line for pr in led.problems} == {2, 3}
    assert "missing key" in led.problems[1].reason


@pytest.mark.parametrize("change, match", [
    ({"status": "ok"}, "status"),
    ({"M": "16"}, "M"),
    ({"bogus": 1}, "unknown key"),
])
def test_invalid_entry_is_refused_and_nothing_written(tmp_path, change, match):
    p = tmp_path / "l.jsonl"
    with pytest.raises(ValueError, match=match):
        Ledger(p).append(entry(**change))
    assert not p.exists()
