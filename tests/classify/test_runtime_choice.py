"""--runtime auto takes the int8 graph only on a CPU where it pays: where it measured faster at
export, or, on a CPU the export did not measure, one with VNNI or AMX; never where it lost."""

from __future__ import annotations

import pytest

from classify_job.bundle import BundleSpec
from classify_job.classify.backends import choose_runtime
from classify_job.classify.backends.cpu import describe_cpu, int8_pays

ZEN4 = {"model": "AMD EPYC 9R14", "flags": ["avx2", "avx512f", "avx512_vnni"]}
SAPPHIRE = {
    "model": "Intel(R) Xeon(R) Platinum 8488C",
    "flags": ["avx2", "avx512f", "avx512_vnni", "amx_int8"],
}
ZEN3 = {"model": "AMD EPYC 7R13", "flags": ["avx2"]}


def bench(cpu: dict, speedup: float) -> dict:
    return {"cpu": cpu, "speedup": speedup, "int8_images_per_s": 100 * speedup, "float32_images_per_s": 100}


@pytest.mark.parametrize(
    ("benchmark", "here", "expected"),
    [
        (bench(ZEN4, 1.8), ZEN4, True),  # measured faster on this very CPU
        (bench(ZEN4, 0.9), ZEN4, False),  # lost here: never, though the CPU has VNNI
        (bench(ZEN4, 1.05), ZEN4, False),  # a win within the noise is not taken
        (bench(ZEN4, 1.8), SAPPHIRE, True),  # another CPU: it has VNNI and AMX
        (bench(ZEN4, 1.8), ZEN3, False),  # another CPU without VNNI: int8 can be slower there
        (bench(ZEN3, 1.3), ZEN3, True),  # ... unless it measured faster on that CPU itself
        (None, ZEN3, False),
        (None, ZEN4, True),
        (bench({**ZEN4, "flags": ["avx2"]}, 1.8), ZEN4, True),  # same name, other flags: by the flags
    ],
)
def test_int8_runs_only_where_it_pays(benchmark, here, expected):
    assert int8_pays(benchmark, here) is expected


def spec_with(*formats: str, speedup: float = 1.8, cpu: dict = ZEN4) -> BundleSpec:
    exports = [
        {"format": f, "file": f"{f}.onnx", "verified": {"passed": True}, "benchmark": bench(cpu, speedup)}
        for f in formats
    ]
    return BundleSpec(("a", "b"), (8, 8), "rgb", "cnn", exports=tuple(exports))


def test_auto_prefers_int8_where_it_pays_and_the_float_graph_elsewhere():
    both = spec_with("onnx", "onnx-int8")
    assert choose_runtime(both, "auto", cpu=ZEN4) == "onnx-int8"
    assert choose_runtime(both, "auto", cpu=ZEN3) == "onnx"
    assert choose_runtime(spec_with("onnx", "onnx-int8", speedup=0.8), "auto", cpu=ZEN4) == "onnx"
    assert choose_runtime(spec_with("onnx"), "auto", cpu=ZEN4) == "onnx"
    assert choose_runtime(both, "onnx-int8", cpu=ZEN3) == "onnx-int8"  # forced: taken anywhere


def test_a_refused_int8_graph_is_never_chosen():
    spec = spec_with("onnx", "onnx-int8")
    refused = {**spec.exports[1], "verified": {"passed": False}}
    spec = BundleSpec(("a", "b"), (8, 8), "rgb", "cnn", exports=(spec.exports[0], refused))
    assert choose_runtime(spec, "auto", cpu=ZEN4) == "onnx"


def test_the_cpu_is_read_from_cpuinfo():
    text = "processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu sse avx2 avx512f avx512_vnni\n\n"
    text += "processor\t: 1\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu sse avx2 avx512f avx512_vnni\n"
    assert describe_cpu(text) == ZEN4
    assert describe_cpu("")["flags"] == []
