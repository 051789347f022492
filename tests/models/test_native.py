"""The compiled CPU kernels of the linear recurrence (rnnmem.models._native): the build,
its cache and off switches, and the kernels against the reference loop."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from rnnmem.errors import InvalidParameterError
from rnnmem.models import _device, _native, linear_recurrence
from rnnmem.models.recurrence import _loop, choose_method

ROOT = Path(__file__).resolve().parents[2]

needs_native = pytest.mark.skipif(not _native.available(),
                                  reason=f"compiled kernels unavailable: {_native.reason()}")


@pytest.fixture
def fresh_native(monkeypatch, tmp_path):
    """An empty cache directory and a forgotten library (restored afterwards)."""
    monkeypatch.setenv("RNNMEM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("RNNMEM_NATIVE", raising=False)  # the build itself is under test
    _native._reset()
    yield tmp_path / "cache"
    monkeypatch.undo()
    _native._reset()


@pytest.fixture
def grain_one():
    """Every kernel call split over as many threads as there are rows (restored after)."""
    _native.set_grain(1)
    yield
    _native.set_grain(_native.OPENMP_GRAIN)


def _inputs(seed, B, T, N, dtype, tv):
    gen = torch.Generator().manual_seed(seed)
    a = 0.99 * torch.rand((B, T, N) if tv else (N,), generator=gen, dtype=torch.float64)
    a = torch.where(torch.rand(a.shape, generator=gen) < 0.2, -a, a)
    x = torch.randn(B, T, N, generator=gen, dtype=torch.float64)
    h0 = torch.randn(B, N, generator=gen, dtype=torch.float64)
    return a.to(dtype), x.to(dtype), h0.to(dtype)


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("tv", [False, True])
@pytest.mark.parametrize("with_h0", [False, True])
def test_forward_is_bit_for_bit_the_loop(dtype, tv, with_h0):
    """Each element is the same two IEEE operations as the loop (a * h, then + x; no FMA
    contraction), so real forward outputs agree exactly, not only to a tolerance."""
    a, x, h0 = _inputs(1, 3, 37, 5, dtype, tv)
    h0 = h0 if with_h0 else None
    assert torch.equal(linear_recurrence(a, x, h0=h0, method="native"), _loop(a, x, h0))


@needs_native
@pytest.mark.parametrize("tv", [False, True])
def test_results_do_not_depend_on_the_thread_split(monkeypatch, tv, grain_one):
    a, x, h0 = _inputs(2, 7, 50, 6, torch.float64, tv)
    g = torch.randn_like(x)

    def run():
        a_, x_, h0_ = (t.clone().requires_grad_() for t in (a, x, h0))
        h = linear_recurrence(a_, x_, h0=h0_, method="native")
        return (h.detach(), *torch.autograd.grad(h, (a_, x_, h0_), g))

    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run()
        torch.set_num_threads(3)
        # split 7 rows in 3 (Python threads; OpenMP threads: grain_one)
        monkeypatch.setattr(_native, "MIN_ELEMENTS_PER_THREAD", 1)
        three = run()
    finally:
        torch.set_num_threads(old)
    for u, v in zip(one, three):
        assert torch.equal(u, v)


@needs_native
def test_auto_runs_native_on_cpu_and_conjugate_views_are_read_as_values():
    a, x, _ = _inputs(3, 2, 20, 4, torch.complex128, False)
    assert choose_method(a, x) == "native"
    lazy = a.conj()  # a view with the conjugate bit: its memory holds a, not conj(a)
    assert lazy.is_conj()
    got = linear_recurrence(lazy, x, method="native")
    ref = _loop(a.conj().resolve_conj(), x, None)
    assert torch.allclose(got, ref, rtol=1e-12, atol=1e-12)


def test_native_on_another_device_is_a_named_error():
    a, x = torch.rand(4, device="meta"), torch.randn(2, 5, 4, device="meta")
    with pytest.raises(InvalidParameterError, match="native"):
        linear_recurrence(a, x, method="native")


def test_off_switch_falls_back_to_the_torch_kernels(fresh_native, monkeypatch):
    monkeypatch.setenv("RNNMEM_NATIVE", "0")
    _native._reset()
    assert not _native.available()
    assert "RNNMEM_NATIVE" in _native.reason()
    a, x, h0 = _inputs(4, 2, 40, 3, torch.float64, False)
    assert choose_method(a, x) != "native"
    assert torch.allclose(linear_recurrence(a, x, h0=h0), _loop(a, x, h0), rtol=1e-12,
                          atol=1e-12)
    with pytest.raises(InvalidParameterError, match="RNNMEM_NATIVE=0"):
        linear_recurrence(a, x, method="native")


def test_missing_compiler_is_reported(fresh_native, monkeypatch, tmp_path):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    assert not _native.available()
    assert "no C compiler" in _native.reason()


def test_failing_compiler_is_reported_and_leaves_no_partial_library(fresh_native, monkeypatch,
                                                                     tmp_path):
    cc = tmp_path / "badcc"
    cc.write_text("#!/bin/sh\nif [ \"$1\" = --version ]; then echo badcc 1.0; exit 0; fi\n"
                  "echo 'error: refused' >&2\nexit 1\n")
    cc.chmod(0o755)
    monkeypatch.setenv("CC", str(cc))
    assert not _native.available()
    assert "refused" in _native.reason()
    assert not list(fresh_native.rglob("*.so"))


@needs_native
def test_the_build_is_cached_and_keyed_by_source_and_compiler(fresh_native):
    assert _native.available()
    lib = _native.library_path()
    assert lib.is_file() and fresh_native in lib.parents
    mtime = lib.stat().st_mtime_ns
    _native._reset()
    assert _native.available() and _native.library_path() == lib
    assert lib.stat().st_mtime_ns == mtime  # loaded, not rebuilt
    cc = _native._compiler()
    src = _native.SOURCES[0].read_bytes()
    assert _native._build_key(cc, src) != _native._build_key(cc, src + b"\n/* edit */\n")


@needs_native
def test_concurrent_first_builds_both_load_a_whole_library(tmp_path):
    code = """
        import torch
        from rnnmem.models import _native, linear_recurrence
        from rnnmem.models.recurrence import _loop
        assert _native.available(), _native.reason()
        a, x = torch.rand(5, dtype=torch.float64), torch.randn(2, 30, 5, dtype=torch.float64)
        assert torch.equal(linear_recurrence(a, x, method="native"), _loop(a, x, None))
        print("ok")
    """
    env = {"RNNMEM_CACHE_DIR": str(tmp_path / "shared")}
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)],
                              env={**os.environ, "PYTHONPATH": str(ROOT), **env},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0 and out.strip() == "ok", err[-500:]
    libs = list((tmp_path / "shared").rglob("*.so"))
    assert len(libs) == 1 and libs[0].name == "librnnmem_native.so"


# ------------------------------------------------------------------ superposition stack
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from rnnmem.models import stacks as S  # noqa: E402
from rnnmem.numerics import tolerance  # noqa: E402


def _torch_update(monkeypatch_ctx, state, actions, values, nd, cot):
    """Values and gradients of the fused update with the compiled kernels off."""
    with monkeypatch_ctx() as mp:
        mp.setattr(S, "_native_ok", lambda *ts: False)
        return _update(state, actions, values, nd, cot)


def _update(state, actions, values, nd, cot):
    ins = [t.clone().requires_grad_() for t in (state, actions, values)]
    out = S._SuperpositionUpdate.apply(*ins, nd)
    return (out.detach(), *torch.autograd.grad(out, ins, cot))


@needs_native
@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 3), st.integers(1, 2), st.integers(0, 40),
       st.integers(1, 20), st.booleans(), st.sampled_from(["float32", "float64"]))
def test_superposition_kernels_equal_the_torch_form(seed, B, K, d, W, grow, dtype):
    """Values and gradients to the tolerance of their sums (three terms per cell; inner
    products of length up to d W), the interior blocks of 16 cells and the bounds-checked
    rest both exercised. Not bit for bit: torch's addcmul may use FMA, the kernel never."""
    dt = getattr(torch, dtype)
    nd = d + 1 if grow or d == 0 else d
    gen = torch.Generator().manual_seed(seed)
    state = torch.rand(B, K, d, W, generator=gen, dtype=torch.float64).to(dt)
    state[..., ::3, :] *= 1e-3
    actions = torch.softmax(torch.randn(B, K, 3, generator=gen, dtype=torch.float64), -1).to(dt)
    values = torch.rand(B, K, W, generator=gen, dtype=torch.float64).to(dt)
    cot = torch.randn(B, K, nd, W, generator=gen, dtype=torch.float64).to(dt)
    assert S._native_ok(state, actions, values)
    got = _update(state, actions, values, nd, cot)
    ref = _torch_update(pytest.MonkeyPatch.context, state, actions, values, nd, cot)
    tol = tolerance(dt, n_ops=3 * max(1, nd * W), scale=float(cot.abs().max() + 1))
    for u, v in zip(got, ref):
        assert u.dtype == v.dtype == dt
        assert tol.allclose(u.double().numpy(), v.double().numpy()), \
            tol.max_violation(u.double().numpy(), v.double().numpy())


@needs_native
@pytest.mark.parametrize("fused", [False, True])
def test_stack_rnn_runs_the_superposition_kernels(monkeypatch, fused):
    from rnnmem.models import StackRNN

    calls = []
    if fused:  # the whole-sequence node calls the compiled functions through kernel()
        names = ("lstm_stack_fwd_row", "lstm_stack_bwd_row", "lstm_bwd_row")
        get = _native.kernel

        def counted(name, dtype):
            fn = get(name, dtype)
            return lambda *a: (calls.append(name), fn(*a))[1]

        monkeypatch.setattr(_native, "kernel", counted)
    else:
        names = ("superposition_forward", "superposition_backward")
        for name in names:
            fn = getattr(_native, name)
            monkeypatch.setattr(_native, name,
                                lambda *a, _fn=fn, _n=name: (calls.append(_n), _fn(*a))[1])
    m = StackRNN(3, controller="lstm", stack="superposition", width=5, stack_width=4,
                 dtype="float64", device="cpu", seed=0)
    m.fused_sequence = fused
    x = torch.randint(0, 3, (2, 7), generator=torch.Generator().manual_seed(0))
    m(x).sum().backward()
    assert calls.count(names[0]) == 7
    # the last update feeds no logit (its read would enter step 8): no gradient reaches it
    assert calls.count(names[1]) == 6
    if fused:  # the cell's backward alone at the last step, with the stack's elsewhere
        assert calls.count(names[2]) == 1


@needs_native
def test_the_plain_lstm_node_runs_the_cell_kernels_both_ways(monkeypatch):
    from rnnmem.models import StackRNN

    calls = []
    get = _native.kernel

    def counted(name, dtype):
        fn = get(name, dtype)
        return lambda *a: (calls.append(name), fn(*a))[1]

    monkeypatch.setattr(_native, "kernel", counted)
    m = StackRNN(3, controller="lstm", stack="none", width=5, dtype="float64", device="cpu",
                 seed=0)
    x = torch.randint(0, 3, (2, 7), generator=torch.Generator().manual_seed(0))
    m(x).sum().backward()
    assert calls.count("lstm_fwd_row") == 7
    assert calls.count("lstm_bwd_row") == 7


def test_row_table_packs_constants_lists_and_tensors_per_call():
    t = _native.row_table(3, 7, None, [1, 2, 3], torch.tensor([10, 20, 30]))
    assert t.dtype == torch.int64 and t.is_contiguous()
    assert t.tolist() == [[7, 0, 1, 10], [7, 0, 2, 20], [7, 0, 3, 30]]
    assert _native.row_table(0, 1, [], torch.empty(0, dtype=torch.int64)).shape == (0, 3)


@needs_native
def test_an_unwritable_cache_builds_a_private_library(monkeypatch, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be\n")
    monkeypatch.setenv("RNNMEM_CACHE_DIR", str(blocker))
    _native._reset()
    try:
        assert _native.available(), _native.reason()
        assert blocker not in _native.library_path().parents
        a, x = torch.rand(3, dtype=torch.float64), torch.randn(2, 9, 3, dtype=torch.float64)
        assert torch.equal(linear_recurrence(a, x, method="native"), _loop(a, x, None))
    finally:
        monkeypatch.undo()
        _native._reset()


def _step_read_grads(stack, state, controls, grow, use, cot_state, cot_read):
    ins = [state.clone().requires_grad_(), controls.actions.clone().requires_grad_(),
           controls.values.clone().requires_grad_()]
    new, read = stack.step_read(ins[0], S.SuperpositionControls(ins[1], ins[2]), grow)
    outs, cots = [], []
    if "state" in use:
        outs.append(new)
        cots.append(cot_state)
    if "read" in use:
        outs.append(read)
        cots.append(cot_read)
    return (new.detach(), read.detach(), *torch.autograd.grad(outs, ins, cots))


@needs_native
@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 3), st.integers(1, 2), st.integers(1, 30),
       st.integers(1, 9), st.integers(1, 3), st.booleans(),
       st.sampled_from([("state", "read"), ("state",), ("read",)]),
       st.sampled_from(["float32", "float64"]))
def test_step_read_is_step_then_read(seed, B, K, d, W, rd, grow, use, dtype):
    """One node (update + read, the read's gradient joined inside the kernel) against the
    torch update followed by a slice: values and all gradients, whichever outputs are
    used."""
    dt = getattr(torch, dtype)
    rd = min(rd, d)
    stack = S.SuperpositionStack(None, W, read_depth=rd, n_stacks=K)
    gen = torch.Generator().manual_seed(seed)
    state = torch.rand(B, K, d, W, generator=gen, dtype=torch.float64).to(dt)
    actions = torch.softmax(torch.randn(B, K, 3, generator=gen, dtype=torch.float64),
                            -1).to(dt)
    values = torch.rand(B, K, W, generator=gen, dtype=torch.float64).to(dt)
    controls = S.SuperpositionControls(actions, values)
    limit = d + 1 if grow else None
    nd = d + 1 if grow else d
    cot_state = torch.randn(B, K, nd, W, generator=gen, dtype=torch.float64).to(dt)
    cot_read = torch.randn(B, K * rd * W, generator=gen, dtype=torch.float64).to(dt)
    got = _step_read_grads(stack, state, controls, limit, use, cot_state, cot_read)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(S, "_native_ok", lambda *ts: False)
        ref = _step_read_grads(stack, state, controls, limit, use, cot_state, cot_read)
    tol = tolerance(dt, n_ops=3 * nd * W, scale=float(cot_state.abs().max() + 2))
    for u, v in zip(got, ref):
        assert tol.allclose(u.double().numpy(), v.double().numpy()), \
            tol.max_violation(u.double().numpy(), v.double().numpy())


@needs_native
def test_step_read_gradcheck_and_double_backward():
    stack = S.SuperpositionStack(None, 3, read_depth=2)
    gen = torch.Generator().manual_seed(5)
    ins = (torch.rand(2, 1, 4, 3, generator=gen, dtype=torch.float64).requires_grad_(),
           torch.softmax(torch.randn(2, 1, 3, generator=gen, dtype=torch.float64),
                         -1).requires_grad_(),
           torch.rand(2, 1, 3, generator=gen, dtype=torch.float64).requires_grad_())

    def f(s, a, v):
        return stack.step_read(s, S.SuperpositionControls(a, v), 5)

    assert torch.autograd.gradcheck(f, ins)
    assert torch.autograd.gradgradcheck(f, ins)


# ------------------------------------------------------------------ threads (OpenMP or not)
def _sequence_results(split: bool):
    """Outputs and every input gradient of the fused stack-LSTM node (the one-call step
    kernels) and of the node without a stack (the cell kernels, float32), of the native
    recurrence and of the step-by-step stack update's kernels, with three torch threads;
    ``split``: every kernel call split over as many threads as it has rows (else each
    runs on one thread), in whichever mode this machine runs."""
    from rnnmem.models.lstm_sequence import SequenceSpec, lstm_stack_sequence

    old = torch.get_num_threads()
    torch.set_num_threads(3)
    _native.set_grain(1 if split else 1 << 62)
    try:
        g = torch.Generator().manual_seed(5)
        B, T, E, H, K, r, W = 7, 6, 3, 5, 2, 2, 3
        R, C = K * r * W, 3 * K + K * W
        ins = [torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_() for s in
               ((B, T, E), (4 * H, E + R), (4 * H, H), (4 * H,), (4 * H,), (H, C), (C,),
                (B, H), (B, H), (B, K, r, W), (B, R))]
        outs = lstm_stack_sequence(SequenceSpec(K, r, W, r + T, False), *ins)
        loss = sum((o * torch.sin(torch.arange(o.numel(), dtype=o.dtype)).view_as(o)).sum()
                   for o in outs)
        res = [o.detach() for o in outs] + list(torch.autograd.grad(loss, ins))
        # the cell kernel alone (no stack), in float32 (its own exp)
        plain = [torch.randn(*s, generator=g).requires_grad_() for s in
                 ((B, T, E), (4 * H, E), (4 * H, H), (4 * H,), (4 * H,))]
        hs, c = lstm_stack_sequence(SequenceSpec(0, 1, 1, None, False), *plain, None, None,
                                    torch.randn(B, H, generator=g),
                                    torch.randn(B, H, generator=g))
        res += [hs.detach(), c.detach(), *torch.autograd.grad((hs * hs).sum() + c.sum(), plain)]
        a, x, _ = _inputs(6, 7, 50, 6, torch.float64, True)
        a, x = a.requires_grad_(), x.requires_grad_()
        h = linear_recurrence(a, x, method="native")
        res += [h.detach(), *torch.autograd.grad(h.sum(), (a, x))]
        # the update kernels of the step-by-step model: 7 x 2 stack rows
        s = torch.rand(7, 2, 9, 3, generator=g, dtype=torch.float64)
        act = torch.softmax(torch.randn(7, 2, 3, generator=g, dtype=torch.float64), -1)
        v = torch.rand(7, 2, 3, generator=g, dtype=torch.float64)
        out = _native.superposition_forward(s, act, v, 10)
        return res + [out, *_native.superposition_backward(s, act, v, torch.sin(out),
                                                           torch.cos(out[:, :, :2]))]
    finally:
        torch.set_num_threads(old)


@needs_native
def test_every_kernel_gives_the_same_bits_for_any_thread_split(grain_one, monkeypatch):
    """Rows are independent and each is computed the same way on any thread: each call on
    one thread and split over three (7 batch rows split 3/2/2, in whichever mode this
    machine runs) agree bit for bit, for the cell kernel, every stack kernel and the
    recurrence. torch's own thread count stays 3 throughout: MKL's matrix products, which
    the sequence node calls between the kernels, need not give the same bits for another
    thread count (measured on an AMD EPYC with AVX-512: a (7, 20) x (20, 21) float64
    product differs in the last bit between 1 and 3 threads)."""
    # the node's loops at these sizes would run on one torch thread (step_threads)
    monkeypatch.setattr(_device, "SERIAL_STEP_WORK", 0)
    monkeypatch.setattr(_native, "MIN_ELEMENTS_PER_THREAD", 1 << 62)  # Python mode: 1 thread
    one = _sequence_results(False)
    monkeypatch.setattr(_native, "MIN_ELEMENTS_PER_THREAD", 1)  # Python mode: a row each
    three = _sequence_results(True)
    with _native.python_threads():  # the other mode too where the pool is shared
        py = _sequence_results(True)
    for u, v, w in zip(one, three, py):
        assert torch.equal(u, v)
        assert torch.equal(u, w)


def _omp_library():
    return _native.available() and bool(_native._dll().rn_openmp())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
@needs_native
def test_an_openmp_build_shares_torchs_runtime_and_follows_its_thread_count():
    """Where the library was built with OpenMP it runs on torch's pool: one OpenMP runtime
    mapped in the process, and torch.set_num_threads reaches the kernels."""
    if not _omp_library():
        pytest.skip("this compiler built the library without OpenMP")
    if _native.switched_off("RNNMEM_NATIVE_OPENMP"):
        pytest.skip("the pool is switched off by RNNMEM_NATIVE_OPENMP")
    assert _native.threading_mode() == "openmp"
    runtimes = _native._openmp_runtimes()
    assert len(runtimes) == 1, runtimes
    dll, old = _native._dll(), torch.get_num_threads()
    try:
        for n in (1, 3):
            torch.set_num_threads(n)
            assert dll.rn_omp_max_threads() == n
    finally:
        torch.set_num_threads(old)


@needs_native
def test_the_openmp_off_switch_splits_over_python_threads(fresh_native, monkeypatch):
    monkeypatch.setenv("RNNMEM_NATIVE_OPENMP", "0")
    _native._reset()
    assert _native.available() and _native.threading_mode() == "python-threads"
    a, x, h0 = _inputs(8, 3, 30, 4, torch.float64, False)
    assert torch.equal(linear_recurrence(a, x, h0=h0, method="native"), _loop(a, x, h0))


@needs_native
def test_a_compiler_without_openmp_builds_once_without_it(fresh_native, monkeypatch,
                                                            tmp_path):
    """A compiler that refuses -fopenmp: the library is built without it (rows split over
    Python threads), and the refusal is remembered, not retried by every process."""
    real, log = _native._compiler(), tmp_path / "calls.log"
    cc = tmp_path / "noompcc"
    cc.write_text(f"#!/bin/sh\nfor a in \"$@\"; do if [ \"$a\" = -fopenmp ]; then\n"
                  f"  echo omp >> '{log}'; echo 'error: no OpenMP here' >&2; exit 1; fi\n"
                  f"done\nexec '{real}' \"$@\"\n")
    cc.chmod(0o755)
    monkeypatch.setenv("CC", str(cc))
    _native._reset()
    assert _native.available(), _native.reason()
    assert _native.threading_mode() == "python-threads" and not _native._dll().rn_openmp()
    assert log.read_text().count("omp") == 1
    assert len(list(fresh_native.rglob("build-failed"))) == 1
    _native._reset()
    assert _native.available() and log.read_text().count("omp") == 1  # not retried
    a, x, _ = _inputs(9, 2, 20, 3, torch.float64, True)
    assert torch.equal(linear_recurrence(a, x, method="native"), _loop(a, x, None))


@needs_native
def test_python_threads_switches_the_mode_for_a_block_only():
    before = _native.threading_mode()
    a, x, _ = _inputs(10, 3, 40, 5, torch.float64, True)
    ref = linear_recurrence(a, x, method="native")
    with _native.python_threads():
        assert _native.threading_mode() == "python-threads"
        assert torch.equal(linear_recurrence(a, x, method="native"), ref)
    assert _native.threading_mode() == before


@needs_native
def test_the_stack_step_checks_a_given_output_buffer():
    s = torch.rand(2, 1, 3, 4, dtype=torch.float64)
    z, rd = torch.randn(2, 7, dtype=torch.float64), torch.empty(2, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="out must be contiguous"):
        _native.superposition_control_forward(z, False, s, 4, rd, 1,
                                              out=torch.empty(2, 1, 3, 4, dtype=torch.float64))
    out = torch.empty(2, 1, 4, 4, dtype=torch.float64)
    new, _, _ = _native.superposition_control_forward(z, False, s, 4, rd, 1, out=out)
    assert new.data_ptr() == out.data_ptr()
    assert torch.equal(new, _native.superposition_control_forward(z, False, s, 4, rd, 1)[0])
