"""DiT, registry, model protocol, dense custom VJP and conditioning map tests (tiny widths,
CPU)."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_config import RIN_TINY, perturbed

from jaxdiff.models import DiffusionModel, conditioning, get_model, list_models
from jaxdiff.models.layers import fast_grad_matmul, gelu_tanh


def tiny_overrides(name: str) -> dict:
    if name.startswith("DiT"):
        heads = get_model(name).num_heads
        return dict(hidden_size=8 * heads, depth=1)
    return dict(RIN_TINY)


def example_inputs(model, batch=2, seed=0):
    x = jax.random.normal(
        jax.random.key(seed), (batch, model.image_size, model.image_size, model.in_channels)
    )
    cond = jnp.linspace(0.0, 1000.0, batch)
    y = jnp.arange(batch, dtype=jnp.int32) % (model.num_classes + 1)
    return x, cond, y


def test_registry_names():
    names = list_models()
    for size in ("S", "B", "L", "XL"):
        for p in (2, 4, 8):
            assert f"DiT-{size}/{p}" in names
    for data in ("cifar10", "imagenet64", "imagenet128", "imagenet256"):
        assert f"RIN-{data}" in names and f"RIN-{data}-tiny" in names
    assert "DiT-tiny/2" in names
    tiny = get_model("DiT-tiny/2")
    assert (tiny.depth, tiny.hidden_size, tiny.num_heads) == (2, 64, 2)


@pytest.mark.parametrize("name", list_models())
def test_every_registry_entry_runs_at_tiny_width(name):
    model = get_model(name, **tiny_overrides(name))
    x, cond, y = example_inputs(model, batch=1)
    # shapes only (eval_shape traces init and apply without computing); tiny models run
    # numerically in the other tests
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, cond, y))
    channels = model.in_channels * (2 if model.learn_sigma else 1)
    # every model's __call__ and protocol methods return the same kinds of things
    out = jax.eval_shape(lambda v: model.apply(v, x, cond, y), variables)
    trained = jax.eval_shape(
        lambda v: model.train_apply(v, x, cond, y, jax.random.key(1), train=True), variables
    )
    carry = model.initial_carry(1)
    sampled, next_carry = jax.eval_shape(
        lambda v: model.sample_apply(v, x, cond, y, carry), variables
    )
    for o in (out, trained, sampled):
        assert isinstance(o, jax.ShapeDtypeStruct)
        assert o.shape == (*x.shape[:3], channels)
        assert o.dtype == jnp.float32
    assert jax.tree.structure(next_carry) == jax.tree.structure(carry)
    for a, b in zip(jax.tree.leaves(next_carry), jax.tree.leaves(carry), strict=True):
        assert (a.shape, a.dtype) == (b.shape, b.dtype)


@pytest.mark.parametrize("name", list_models())
def test_every_registry_entry_is_a_diffusion_model(name):
    model = get_model(name)  # unbound and uninitialised: no parameters are built
    assert isinstance(model, DiffusionModel)


def _signature(fn) -> list[tuple]:
    """Parameter names, kinds and defaults (annotations differ in spelling only)."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


def test_every_model_class_has_the_protocol_signatures():
    """One shared signature: no model-specific argument in the protocol's methods."""
    classes = {type(get_model(name)) for name in list_models()}
    assert len(classes) >= 2
    for method in ("__call__", "train_apply", "initial_carry", "sample_apply"):
        want = _signature(getattr(DiffusionModel, method))
        for cls in classes:
            assert _signature(getattr(cls, method)) == want, (cls.__name__, method)
    assert not isinstance(object(), DiffusionModel)


@pytest.mark.parametrize(
    "name, expected", [("DiT-S/2", 33e6), ("DiT-B/2", 130e6), ("DiT-XL/2", 675e6)]
)
def test_dit_parameter_counts_match_paper(name, expected):
    model = get_model(name)  # 32x32x4 latents, learn_sigma, 1000 classes
    x, cond, y = example_inputs(model, batch=1)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, cond, y))
    count = sum(a.size for a in jax.tree.leaves(shapes))
    assert abs(count - expected) / expected < 0.01, count
    # closed form: embedders + depth x (adaLN 6D + qkv 3D + proj D + MLP 8D) + final layer
    d, p, c, k = model.hidden_size, model.patch_size, model.in_channels, model.num_classes
    per_block = (6 * d * d + 6 * d) + (3 * d * d + 3 * d) + (d * d + d) + (8 * d * d + 5 * d)
    embed = (p * p * c * d + d) + (256 * d + d) + (d * d + d) + (k + 1) * d
    final = (2 * d * d + 2 * d) + (d * p * p * 2 * c + p * p * 2 * c)
    assert count == embed + model.depth * per_block + final


def test_invalid_configs_raise_at_construction():
    with pytest.raises(ValueError, match="known"):
        get_model("DiT-M/2")
    with pytest.raises(ValueError, match="hidden_sise"):
        get_model("DiT-S/2", hidden_sise=8)
    with pytest.raises(ValueError, match="patch_size"):
        get_model("DiT-S/8", image_size=12)
    with pytest.raises(ValueError, match="num_heads"):
        get_model("DiT-S/2", hidden_size=100)
    with pytest.raises(ValueError, match="conditioning"):
        get_model("DiT-S/2", conditioning="sigma")
    with pytest.raises(ValueError, match="rw_heads"):
        get_model("RIN-cifar10", interface_dim=100)
    with pytest.raises(ValueError, match="patch_size"):
        get_model("RIN-imagenet64", image_size=60)


@pytest.fixture(scope="module")
def tiny_dit():
    """DiT-tiny/2 at 8x8x4, depth 1, 5 classes; its variables and one jitted apply."""
    model = get_model("DiT-tiny/2", image_size=8, depth=1, num_classes=5)
    x, cond, y = example_inputs(model)
    variables = jax.jit(model.init)(jax.random.key(0), x, cond, y)
    return model, variables, jax.jit(model.apply), (x, cond, y)


def test_zero_init_gives_exactly_zero_output_and_nonzero_gradient(tiny_dit):
    model, variables, apply, (x, cond, y) = tiny_dit
    out = apply(variables, x, cond, y)
    assert out.shape == (2, 8, 8, 8)  # learn_sigma: 2C channels
    assert bool(jnp.all(out == 0.0))
    grads = jax.jit(jax.grad(lambda v: jnp.sum(model.apply(v, x, cond, y)[..., :4] * x)))(variables)
    final = grads["params"]["final_layer"]["linear"]["kernel"]
    assert float(jnp.abs(final).max()) > 0  # training can move away from zero
    assert float(jnp.abs(apply(perturbed(variables), x, cond, y)).max()) > 1e-3


def test_bfloat16_params_run_in_bfloat16(tiny_dit):
    model, variables, apply, (x, cond, y) = tiny_dit
    variables = perturbed(variables)
    bf16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), variables)
    out = apply(bf16, x.astype(jnp.bfloat16), cond, y)
    ref = apply(variables, x, cond, y)
    assert out.dtype == jnp.bfloat16
    err = float(jnp.abs(out.astype(jnp.float32) - ref).max() / jnp.abs(ref).max())
    assert err < 0.05, err


def test_conditioning_and_labels_change_the_output(tiny_dit):
    model, variables, apply, (x, cond, y) = tiny_dit
    variables = perturbed(variables)
    base = apply(variables, x, cond, y)
    null = apply(variables, x, cond, jnp.full_like(y, 5))  # the null class
    other = apply(variables, x, cond + 100.0, y)
    assert float(jnp.abs(base - null).max()) > 1e-4
    assert float(jnp.abs(base - other).max()) > 1e-4


def test_fast_grad_matmul_gradient_equals_autodiff():
    kx, kw, kg = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (3, 37, 24))
    w = jax.random.normal(kw, (24, 40))
    g = jax.random.normal(kg, (3, 37, 40))
    f_fast = lambda x, w: jnp.sum(fast_grad_matmul(x, w) * g)
    f_ref = lambda x, w: jnp.sum(jnp.dot(x, w) * g)
    np.testing.assert_array_equal(fast_grad_matmul(x, w), jnp.dot(x, w))
    for a, b in zip(
        jax.jit(jax.grad(f_fast, (0, 1)))(x, w),
        jax.jit(jax.grad(f_ref, (0, 1)))(x, w),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)  # bitwise equal on x86
    # against a float64 NumPy reference: dW = Xᵀ·G summed over all leading axes
    dw = np.einsum("bni,bno->io", np.float64(x), np.float64(g))
    np.testing.assert_allclose(jax.grad(f_fast, 1)(x, w), dw, rtol=1e-5, atol=1e-4)


def test_fast_dense_model_gradient_equals_plain_autodiff():
    fast = get_model("DiT-tiny/2", image_size=8, depth=1)
    plain = get_model("DiT-tiny/2", image_size=8, depth=1, fast_dense=False)
    x, cond, y = example_inputs(fast)
    variables = perturbed(jax.jit(fast.init)(jax.random.key(0), x, cond, y))

    def loss(model):
        return jax.jit(jax.grad(lambda v: jnp.mean(model.apply(v, x, cond, y) ** 2)))

    g_fast, g_plain = loss(fast)(variables), loss(plain)(variables)
    for a, b in zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_plain), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


def test_determinism_and_single_compilation(tiny_dit):
    model, v1, _, (x, cond, y) = tiny_dit
    v2 = jax.jit(model.init)(jax.random.key(0), x, cond, y)
    for a, b in zip(jax.tree.leaves(v1), jax.tree.leaves(v2), strict=True):
        np.testing.assert_array_equal(a, b)
    v1 = perturbed(v1)
    traces = []

    @jax.jit
    def apply(v, x, cond, y):
        traces.append(1)
        return model.apply(v, x, cond, y)

    outs = [apply(v1, x * s, cond + s, y) for s in (1.0, 2.0, 3.0)]
    assert len(traces) == 1
    np.testing.assert_array_equal(apply(v1, x, cond + 1.0, y), outs[0])
    assert float(jnp.abs(outs[0] - outs[1]).max()) > 0


def test_gelu_tanh_matches_closed_form():
    h = np.linspace(-8.0, 8.0, 2001)
    expected = 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h**3)))
    np.testing.assert_allclose(gelu_tanh(jnp.asarray(h, jnp.float32)), expected, atol=2e-6)
    hj = jnp.asarray(h, jnp.float32)
    np.testing.assert_allclose(
        jax.vmap(jax.grad(gelu_tanh))(hj),
        jax.vmap(jax.grad(lambda v: jax.nn.gelu(v, approximate=True)))(hj),
        atol=1e-5,
    )


def test_logsnr_to_cond_map():
    lam = jnp.array([20.0, 0.0, -20.0, 30.0, -30.0])
    np.testing.assert_allclose(conditioning.logsnr_to_cond(lam), [0, 500, 1000, 0, 1000])
    grid = jnp.linspace(-20, 20, 101)
    assert bool(jnp.all(jnp.diff(conditioning.logsnr_to_cond(grid)) < 0))
    # the affine map in closed form: cond = 25·(20 − λ) on [−20, 20]
    np.testing.assert_allclose(conditioning.logsnr_to_cond(grid), 25.0 * (20.0 - grid), atol=1e-3)
    assert conditioning.get_cond_fn("logsnr") is conditioning.logsnr_to_cond
    with pytest.raises(ValueError, match="ddpm_linear"):
        conditioning.get_cond_fn("edm")
