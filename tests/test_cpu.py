from checkout_cam.cpu import cpu_info, parse_cpuinfo

SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse2 avx fma avx2 avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8
processor\t: 1
model name\t: ignored second core
flags\t\t: fpu
"""

ZEN2 = """processor\t: 0
model name\t: AMD EPYC 7B12
flags\t\t: fpu sse2 avx fma avx2
"""


def test_vnni_cpu_reports_its_instruction_sets_in_order():
    info = parse_cpuinfo(SAPPHIRE_RAPIDS)
    assert info.model == "Intel(R) Xeon(R) Processor"
    assert info.isa == ["avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_bf16",
                        "amx_int8"]
    assert info.vnni and info.bf16 and info.amx
    assert "avx512_vnni" in info.describe()


def test_avx2_cpu_has_no_vnni():
    info = parse_cpuinfo(ZEN2)
    assert info.isa == ["avx2", "fma"]
    assert not info.vnni and not info.bf16 and not info.amx


def test_avx_vnni_alone_counts_as_vnni():
    # Alder Lake and later client CPUs: VNNI on 256-bit registers, no AVX-512.
    assert parse_cpuinfo("flags\t: avx2 avx_vnni\n").vnni


def test_unreadable_cpuinfo_assumes_nothing():
    info = parse_cpuinfo("")
    assert info.isa == [] and not info.vnni and info.model


def test_this_machine_is_read():
    info = cpu_info()
    assert isinstance(info.isa, list) and info.cores >= 1
