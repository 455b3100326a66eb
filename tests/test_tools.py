"""CPU checks of the GPU tools' argument handling (tools/*.py), before they touch a GPU."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

PAIR = {"BLOCK_K": 16, "BLOCK_W": 4, "ROWS": 1, "num_warps": 2, "BLOCK_G": 512, "SPLIT": 1, "UNIT": 2,
        "PERSIST": 3, "HOIST_W": 1}


def test_config_probe_explicit_configs(tmp_path):
    """--configs: each entry validated and named; the default is not timed twice."""
    import config_probe
    from slidesparse.kernels.configs import default_config

    path = tmp_path / "c.json"
    default = default_config("rmsnorm_quant", 3072, "int8", "2_10")
    path.write_text(json.dumps({"rmsnorm_quant:5120:2_8": [PAIR, {**PAIR, "num_warps": 4, "UNIT": 4, "SHRINK": 1},
                                                           {**PAIR, "ROWS": 2}],
                                "rmsnorm_quant:3072:2_10": [default, {**PAIR, "BLOCK_G": 256, "UNIT": 1}],
                                "quant:2048:dense": [{"BLOCK_K": 2048, "BLOCK_W": 256, "ROWS": 2, "num_warps": 8}]}))
    got = config_probe.load_configs(path)
    assert set(got) == {("rmsnorm_quant", 5120, "2_8"), ("rmsnorm_quant", 3072, "2_10"), ("quant", 2048, None)}
    assert [n for n, _ in got[("rmsnorm_quant", 5120, "2_8")]] == ["G512sw2u2 P3h", "G512sw4u4x P3h",
                                                                   "G512sw2u2 rows2 P3h"]
    assert got[("quant", 2048, None)][0][0] == "K2048 W256 w8 rows2"
    names = [n for n, _ in config_probe.cands("rmsnorm_quant", 3072, "2_10", "int8",
                                              got[("rmsnorm_quant", 3072, "2_10")])]
    assert names == ["default", "G256sw2u1 P3h"]  # the listed default is the default: timed once


@pytest.mark.parametrize("text, match", [
    ("[]", "non-empty JSON object"), ("{", "cannot read"), ('{"quant:2048": [{}]}', "kernel:K:pattern"),
    ('{"dequant:2048:dense": [{}]}', "kernel:K:pattern"), ('{"quant:2048:dense": []}', "non-empty list"),
    ('{"quant:2048:dense": [{"BLOCK_K": 2048}]}', "missing"),
    ('{"quant:2048:2_8": [{"BLOCK_K": 16, "BLOCK_W": 4, "ROWS": 1, "num_warps": 3}]}', "num_warps"),
])
def test_config_probe_rejects_bad_configs(tmp_path, text, match):
    import config_probe

    path = tmp_path / "c.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        config_probe.load_configs(path)
