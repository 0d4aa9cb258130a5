"""benchmarks/SCALING.md's communication model (``benchmarks/scaling.py``'s ``Comm``) against
the collectives XLA compiles for the real sharded train step: the tiny digits config on 8
simulated CPU devices, data parallel (8, 1) and FSDP (1, 8) with every divisible parameter
sharded (``mesh.min_fsdp_size`` = 1). Nothing runs on the devices: the step is lowered on
abstract inputs and compiled, and its HLO text parsed."""

import re

import jax
import pytest

from benchmarks import scaling
from jaxdiff.training.step import LAM_BIN_EDGES

# What a data-parallel step all-reduces besides the gradients: the metrics computed over the
# batch (loss, λ min and max, the λ-bin loss sums and counts: 3 + 2·20 float32 = 172 bytes).
METRICS_BYTES = 4 * (3 + 2 * (len(LAM_BIN_EDGES) - 1))
# The bulk of a DiT's parameters at scale: the per-token matrices of the blocks.
BULK = re.compile(r"blocks_\d+/(attn|mlp)/\w+/kernel$")


@pytest.fixture(scope="module", params=[(8, 1), (1, 8)], ids=["dp_8x1", "fsdp_1x8"])
def compiled(request):
    assert jax.device_count() >= 8, "conftest sets 8 simulated devices"
    return scaling.hlo_check(request.param, jax.devices()[:8])


def _sound(leaves, config):
    """classify() reads parameter shapes: no activation may share one. Activations carry the
    global batch, the batch per device or the token count in a dimension; no parameter does."""
    d = config.data
    tokens = (d.image_size // 2) ** 2
    special = {d.batch_size, d.batch_size // 8, tokens}
    assert not any(special & set(x.shape) for x in leaves), [x.shape for x in leaves]


@pytest.mark.slow  # two compilations of the train step: ~50 s on 2 cores
def test_collectives_match_the_communication_model(compiled):
    mesh, leaves, comm, obs = (compiled[k] for k in ("mesh", "leaves", "comm", "observed"))
    _sound(leaves, scaling.hlo_config(mesh))
    num_params = sum(x.nbytes for x in leaves) // 4
    every = scaling.leaf_counter(leaves)
    if mesh == (8, 1):
        # Data parallel, exactly: each float32 gradient all-reduced once (4·P bytes), plus
        # the batch metrics; nothing gathered, scattered or exchanged.
        assert comm.grad_reduced == 4 * num_params and comm.gathered == 0
        assert obs.reduced == every
        assert obs.bytes_of(obs.reduced) == comm.grad_reduced
        assert not obs.gathered and set(obs.other) <= {"all-reduce"}
        assert obs.other.get("all-reduce", 0) <= METRICS_BYTES
        slack = scaling.ring_all_reduce(METRICS_BYTES, 8)
        assert comm.wire_bytes() <= obs.wire_bytes <= comm.wire_bytes() + slack
        return
    # FSDP: the model's per-leaf bounds hold for every parameter shape ...
    sharded = [x for x in leaves if x.sharded]
    replicated = [x for x in leaves if not x.sharded]
    assert sharded and replicated  # (final_layer/linear/bias: 4 elements, not divisible by 8)
    gathers = scaling.leaf_counter(
        sharded, lambda x: comm.passes + (len(x.shape) >= 2)
    )  # forward, and the backward pass for matrices
    assert all(obs.gathered[k] <= gathers[k] for k in obs.gathered), (obs.gathered, gathers)
    assert all(obs.reduced[k] <= every[k] for k in obs.reduced), (obs.reduced, every)
    assert obs.bytes_of(obs.gathered) <= comm.gathered
    # ... exactly for the blocks' per-token matrices: gathered for the forward and again
    # for the backward pass, their full gradients reduced once ...
    bulk = scaling.leaf_counter([x for x in sharded if BULK.search(x.path)])
    assert bulk
    assert all(obs.gathered[k] >= 2 * n and obs.reduced[k] >= n for k, n in bulk.items())
    # ... the replicated leaves' gradients all-reduced ...
    assert all(obs.reduced[k] >= n for k, n in scaling.leaf_counter(replicated).items())
    # ... and everything the step sends (activations and metrics included) stays within the
    # model's FSDP bytes: XLA moves an activation instead of a parameter only when smaller.
    assert obs.wire_bytes <= comm.wire_bytes()
    assert comm.wire_bytes() > scaling.Comm.of(leaves, 8, 1).wire_bytes()  # FSDP costs more


def test_comm_formulas():
    def leaf(shape, sharded):
        return scaling.Leaf("w", shape, 4, sharded)

    dp = scaling.Comm.of([leaf((1000, 100), False), leaf((100,), False)], 8, 1)
    assert dp.grad_reduced == 4 * 100_100 and dp.gathered == 0
    assert dp.wire_bytes() == pytest.approx(2 * 7 / 8 * 4 * 100_100)
    fsdp = scaling.Comm.of([leaf((1000, 100), True), leaf((100,), True)], 2, 4, passes=2)
    # forward all-gathers (2 passes) + backward (the matrix) + reduce-scatter over fsdp = 4,
    # then the gradient shards all-reduced over data = 2
    full, matrix = 4 * 100_100, 4 * 100_000
    assert fsdp.gathered == 2 * full + matrix
    expect = 3 / 4 * (2 * full + matrix + full) + 2 * 1 / 2 * full / 4
    assert fsdp.wire_bytes() == pytest.approx(expect)


def test_collectives_parser():
    hlo = """
  %all-reduce.3 = (f32[], f32[32,4]{1,0}) all-reduce(%a, %b), channel_id=3, replica_groups=mesh['axis_0'=2,'axis_1'=4] {'axis_1'}, to_apply=%add
  %ag = bf16[64,8]{1,0} all-gather(%p), channel_id=4, replica_groups=[2,4]<=[8], dimensions={0}
  %rs = f32[8,16]{1,0} reduce-scatter(%g), channel_id=5, replica_groups={{0,1},{2,3}}, dimensions={0}, to_apply=%add
  %ags = (f32[8]{0}, f32[64]{0}) all-gather-start(%q), replica_groups=[1,8]<=[8], dimensions={0}
  %x = f32[4] add(%y, %z)
"""  # noqa: E501
    ops = scaling.collectives(hlo, 8)
    assert [c.op for c in ops] == ["all-reduce", "all-gather", "reduce-scatter", "all-gather"]
    assert [c.group for c in ops] == [4, 4, 2, 8]
    assert ops[0].nbytes == 4 + 4 * 128 and ops[0].wire_bytes() == pytest.approx(1.5 * 516)
    assert ops[1].nbytes == 2 * 512
    assert ops[2].full_arrays() == [("f32", (16, 16))]  # the operand: result × group
    assert ops[3].arrays == (("f32", (64,)),)  # an all-gather-start's result, not its operand
