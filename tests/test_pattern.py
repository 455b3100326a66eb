"""Pattern parsing, derived quantities and the slid-K rule."""

import pytest

from slidesparse.pattern import K_ALIGN, Pattern, parse_patterns


@pytest.mark.parametrize("L", [4, 6, 8, 10, 12, 16, 64])
def test_all_spellings_name_one_pattern(L):
    forms = [f"2_{L}", f"2:{L}", f"{L - 2}:{L}", f" 2 : {L} ", Pattern(L)]
    parsed = {Pattern.parse(f) for f in forms}
    assert parsed == {Pattern(L)}


def test_known_equalities():
    assert Pattern.parse("2_8") == Pattern.parse("2:8") == Pattern.parse("6:8") == Pattern(8)
    assert Pattern.parse("2_4") == Pattern.parse("2:4") == Pattern(4)
    assert Pattern.parse("4:6") == Pattern.parse("2_6")
    assert Pattern.parse("8:10") == Pattern.parse("2:10")


@pytest.mark.parametrize("text, label, paper, expansion, speedup, windows", [
    ("2:4", "2_4", "2:4", 1.0, 2.0, 1),
    ("4:6", "2_6", "4:6", 4 / 3, 1.5, 2),
    ("6:8", "2_8", "6:8", 1.5, 4 / 3, 3),
    ("8:10", "2_10", "8:10", 1.6, 1.25, 4),
])
def test_properties(text, label, paper, expansion, speedup, windows):
    p = Pattern.parse(text)
    assert p.label == label
    assert p.paper == paper
    assert p.expansion == pytest.approx(expansion)
    assert p.ideal_speedup == pytest.approx(speedup)
    assert p.windows_per_group == windows
    assert p.group_out == 4 * windows == 2 * (p.window - 2)
    assert p.nonzeros == p.window - 2 and p.zeros == 2
    assert str(p) == f"{paper} ({label})"
    assert p.is_native == (p.window == 4)


@pytest.mark.parametrize("K, expected", [
    (3584, (4800, 5376, 5760)),    # Qwen2.5-7B hidden
    (18944, (25280, 28416, 30336)),  # Qwen2.5-7B intermediate
    (2048, (2752, 3072, 3296)),    # Llama3.2-1B hidden
    (8192, (10944, 12288, 13120)),
    (5120, (6848, 7680, 8192)),
    (13824, (18432, 20736, 22144)),
])
def test_slid_k_known_values(K, expected):
    got = tuple(Pattern.parse(t).slid_k(K) for t in ("4:6", "6:8", "8:10"))
    assert got == expected


@pytest.mark.parametrize("L", [4, 6, 8, 10, 12, 14, 16])
@pytest.mark.parametrize("K", [1, 3, 4, 5, 31, 32, 33, 100, 257, 1000])
def test_slid_k_rule_ragged(L, K):
    p = Pattern(L)
    groups = -(-K // L)
    raw = groups * 2 * (L - 2)
    got = p.slid_k(K)
    assert got % K_ALIGN == 0
    assert raw <= got < raw + K_ALIGN
    assert p.groups(K) == groups


def test_slid_k_2to4_is_k_rounded_to_32():
    p = Pattern(4)
    for K in (32, 64, 4096, 4100):
        assert p.slid_k(K) == -(-K // 32) * 32


@pytest.mark.parametrize("K", [0, -4])
def test_slid_k_rejects_nonpositive(K):
    with pytest.raises(ValueError, match="K must be positive"):
        Pattern(8).slid_k(K)


@pytest.mark.parametrize("bad", ["3:8", "2:7", "2:2", "abc", "2_inf", "2:66", "", "6_8", "4:4", "2:0",
                                 "8:6", "2/8", "2:8:10"])
def test_bad_text_lists_accepted_forms(bad):
    with pytest.raises(ValueError) as e:
        Pattern.parse(bad)
    msg = str(e.value)
    assert "accepted forms" in msg and "'2_8', '2:8', '6:8'" in msg


@pytest.mark.parametrize("L", [2, 3, 5, 66, 0, -8])
def test_bad_window(L):
    with pytest.raises(ValueError, match="accepted forms"):
        Pattern(L)


def test_window_must_be_int():
    with pytest.raises(ValueError, match="must be an int"):
        Pattern(8.0)
    with pytest.raises(ValueError, match="must be an int"):
        Pattern(True)


def test_parse_patterns_keeps_order_and_drops_duplicates():
    assert parse_patterns("2:4,4:6, 6:8,2_8,8:10") == [Pattern(4), Pattern(6), Pattern(8), Pattern(10)]
    assert parse_patterns(["6:8", "2:4"]) == [Pattern(8), Pattern(4)]
    assert parse_patterns("") == []
    with pytest.raises(ValueError, match="accepted forms"):
        parse_patterns("2:4,3:8")


def test_patterns_order_and_hash():
    assert sorted([Pattern(10), Pattern(4), Pattern(8)]) == [Pattern(4), Pattern(8), Pattern(10)]
    assert len({Pattern(8), Pattern.parse("6:8")}) == 1
