"""Tuned-config tables: a device without a table of its own borrows the most similar table of its family."""

from __future__ import annotations

import json

import pytest

from edgeinfer import tuned_configs

WORKLOAD = {"K": 16, "M": 32, "N": 64}
FAMILY = "portable-computing-language-cpu"
AMD = "portable-computing-language-authenticamd-pthread-skylake-avx512-amd-epyc"
INTEL = "portable-computing-language-genuineintel-pthread-skylake-avx512-intel-r-xeon-r-processor"
GOLD = "portable-computing-language-genuineintel-pthread-skylake-avx512-intel-r-xeon-r-gold"


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A private tuned_configs/ directory; the shipped-table cache is cleared before and after."""
    monkeypatch.setattr(tuned_configs, "data_dir", lambda name: tmp_path)
    monkeypatch.delenv("EDGEINFER_TUNED_CONFIGS", raising=False)
    tuned_configs._shipped_table.cache_clear()

    def write(key: str, family: str, tm: int) -> None:
        table = tuned_configs.ConfigTable("opencl", key, family=family)
        table.add("gemm", WORKLOAD, {"TM": tm})
        tuned_configs.write_table(table, tmp_path / "opencl" / f"{key}.json")

    yield write
    tuned_configs._shipped_table.cache_clear()


def lookup(key: str, family: str) -> tuple[dict, str]:
    return tuned_configs.load_table("opencl", key, family).lookup("gemm", WORKLOAD, lambda: {"TM": 0})


def test_own_table_wins_over_the_family(shipped):
    shipped(AMD, FAMILY, 4)
    shipped(INTEL, FAMILY, 8)
    assert lookup(INTEL, FAMILY) == ({"TM": 8}, "tuned")


def test_a_new_device_borrows_the_most_similar_table_of_its_family(shipped):
    shipped(AMD, FAMILY, 4)
    shipped(GOLD, FAMILY, 8)
    shipped("nvidia-cuda-nvidia-corporation-nvidia-h100", "nvidia-cuda-gpu", 16)
    assert lookup(INTEL, FAMILY) == ({"TM": 8}, f"tuned via {GOLD}")
    assert lookup("portable-computing-language-authenticamd-pthread-znver4-amd-ryzen", FAMILY) == (
        {"TM": 4},
        f"tuned via {AMD}",
    )
    near = tuned_configs.load_table("opencl", INTEL, FAMILY).lookup("gemm", {**WORKLOAD, "N": 128}, dict)
    assert near == ({"TM": 8}, f"nearest (K=16,M=32,N=64) via {GOLD}")


def test_templates_missing_from_the_own_table_are_borrowed(shipped, tmp_path):
    shipped(AMD, FAMILY, 4)
    shipped(INTEL, FAMILY, 8)
    path = tmp_path / "opencl" / f"{AMD}.json"
    amd = tuned_configs.read_table(path, "opencl", AMD)
    amd.add("conv2d", {"C": 8}, {"TM": 2})
    tuned_configs.write_table(amd, path)
    table = tuned_configs.load_table("opencl", INTEL, FAMILY)
    assert table.lookup("gemm", WORKLOAD, dict) == ({"TM": 8}, "tuned")
    assert table.lookup("conv2d", {"C": 16}, dict) == ({"TM": 2}, f"nearest (C=8) via {AMD}")
    assert table.lookup("depthwise", {"C": 16}, lambda: {"TM": 0}) == ({"TM": 0}, "default")


def test_no_family_table_means_defaults(shipped):
    shipped(AMD, FAMILY, 4)
    assert lookup("nvidia-cuda-nvidia-corporation-nvidia-geforce-rtx-4090", "nvidia-cuda-gpu") == ({"TM": 0}, "default")
    assert lookup(INTEL, "") == ({"TM": 0}, "default")  # a caller that names no family borrows nothing


def test_tables_without_family_are_never_lent(shipped, tmp_path):
    shipped(AMD, FAMILY, 4)
    path = tmp_path / "opencl" / f"{AMD}.json"
    data = json.loads(path.read_text())
    del data["family"]
    path.write_text(json.dumps(data))
    assert lookup(INTEL, FAMILY) == ({"TM": 0}, "default")


def test_shipped_tables_name_their_family():
    for path in (tuned_configs.PACKAGE_DIR.parent / "tuned_configs").glob("*/*.json"):  # opencl/ and cuda/
        data = json.loads(path.read_text())
        assert data["family"] and data["device_key"] == path.stem and data["backend"] == path.parent.name, path


HASWELL_AMD = "portable-computing-language-authenticamd-pthread-haswell-amd-epyc-7b13"
HASWELL_INTEL = "portable-computing-language-genuineintel-pthread-haswell-intel-r-xeon-r-processor"


def test_a_device_borrows_from_its_own_isa_class_first(shipped):
    """An AVX2 EPYC takes an AVX2 table (even an Intel one) over the AVX-512 EPYC table that shares more words."""
    shipped(AMD, FAMILY, 4)
    shipped(HASWELL_INTEL, FAMILY, 8)
    table = tuned_configs.load_table("opencl", HASWELL_AMD, FAMILY, "avx2")
    assert table.lookup("gemm", WORKLOAD, dict) == ({"TM": 8}, f"tuned via {HASWELL_INTEL}")


def test_configs_lent_across_isa_classes_must_be_accepted(shipped):
    shipped(AMD, FAMILY, 16)
    table = tuned_configs.load_table("opencl", HASWELL_AMD, FAMILY, "avx2")
    assert table.fallback.isa == "avx512"
    accept_small = lambda config: config["TM"] <= 8  # noqa: E731
    config, source = table.lookup("gemm", WORKLOAD, lambda: {"TM": 2}, accept_small)
    assert config == {"TM": 2} and source.startswith("default") and "avx2" in source
    assert table.lookup("gemm", WORKLOAD, dict, lambda config: True) == ({"TM": 16}, f"tuned via {AMD}")


def test_user_tables_take_precedence_and_say_so(shipped, tmp_path, monkeypatch):
    shipped(INTEL, FAMILY, 8)
    monkeypatch.setenv("EDGEINFER_TUNED_DIR", str(tmp_path / "user"))
    user = tuned_configs.ConfigTable("opencl", INTEL, family=FAMILY)
    user.add("gemm", WORKLOAD, {"TM": 12})
    user.add("gemm", {**WORKLOAD, "K": 32}, {"TM": 6})
    tuned_configs.write_table(user, tmp_path / "user" / "opencl" / f"{INTEL}.json")
    table = tuned_configs.load_table("opencl", INTEL, FAMILY)
    assert table.lookup("gemm", WORKLOAD, dict) == ({"TM": 12}, "tuned (user table)")
    assert table.lookup("gemm", {**WORKLOAD, "K": 32}, dict) == ({"TM": 6}, "tuned (user table)")
    assert not list((tmp_path / "user" / "opencl").glob("*.tmp"))  # written atomically


def test_shipped_tables_name_their_isa_class():
    for path in (tuned_configs.PACKAGE_DIR.parent / "tuned_configs").glob("*/*.json"):  # opencl/ and cuda/
        table = tuned_configs.read_table(path, path.parent.name, path.stem)
        expected = "simt" if table.family.endswith("-gpu") else ("avx2" if "haswell" in path.stem else "avx512")
        assert table.isa == expected, path
